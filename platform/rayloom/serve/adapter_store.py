"""The adapter store of a live endpoint: LoRA adapters published under serve.lora_dynamic_path.

A replica loads adapter `<name>` from `<lora_dynamic_path>/<name>` the first time a request names
`model="<base>:<name>"` (rayloom's NamedLoraLoader, through the commit marker), so publishing needs
no redeploy. `publish` checks the adapter (a peft LoRA the engine's max_lora_rank fits) and
commits it with storage.commit_dir: the marker is written last, so neither the ingress nor a
replica ever sees half an upload. It refuses to replace a published name (replicas cache adapters
by name; publish a new name instead). `unpublish` removes it; the ingress stops admitting the name
within `PUBLISHED_TTL_S` (a replica that still holds it in memory no longer gets its requests).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from rayloom import storage
from rayloom.config import ServeConfig
from rayloom.errors import UserError
from rayloom.serve.adapters import fetch_adapter

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
PUBLISHED_TTL_S = 2.0


def _store(serve: ServeConfig) -> str:
    if not serve.lora_dynamic_path:
        raise UserError("publishing adapters needs the endpoint's adapter store: set serve.lora_dynamic_path to an "
                        "s3:// prefix (the same value the running app was deployed with)")
    return serve.lora_dynamic_path


def adapter_uri(serve: ServeConfig, name: str) -> str:
    if not _NAME.match(name):
        raise UserError(f"adapter name {name!r}: letters, digits, '_', '.', '-' only (it becomes part of the model id)")
    return storage.join(_store(serve), name)


def publish(serve: ServeConfig, source: str, name: str, *, cache_dir: str | Path) -> str:
    """Upload the adapter at `source` (a local directory or s3:// prefix) as `<base>:<name>`; its URI."""
    target = adapter_uri(serve, name)
    if storage.is_committed(target):
        raise UserError(f"adapter {name!r} is already published at {target}; unpublish it first or publish under a "
                        "new name (replicas keep a loaded adapter by name)")
    local = fetch_adapter(source, name, cache_dir, serve.max_lora_rank)  # checks it is a LoRA the engine fits
    return storage.commit_dir(local, target)


def unpublish(serve: ServeConfig, name: str) -> None:
    target = adapter_uri(serve, name)
    if not storage.is_committed(target):
        raise UserError(f"adapter {name!r} is not published under {_store(serve)}")
    storage.remove(target)


def list_published(serve: ServeConfig) -> list[str]:
    store = _store(serve)
    names = {Path(f).parts[0] for f in storage.list_files(store)} if storage.exists(store) else set()
    return sorted(name for name in names if _NAME.match(name) and storage.is_committed(storage.join(store, name)))


class PublishedCache:
    """Whether an adapter is published, remembered for PUBLISHED_TTL_S (the ingress asks per request)."""

    def __init__(self, store: str, ttl_s: float = PUBLISHED_TTL_S):
        self._store = store
        self._ttl_s = ttl_s
        self._seen: dict[str, tuple[float, bool]] = {}

    def is_published(self, name: str) -> bool:
        now = time.monotonic()
        cached = self._seen.get(name)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        found = bool(_NAME.match(name)) and storage.is_committed(storage.join(self._store, name))
        self._seen[name] = (now, found)
        return found
