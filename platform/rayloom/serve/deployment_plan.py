"""Resolve the serve config into what a deployment needs: model source, context window, adapters.

Where files are resolved depends on where the replicas run. With the embedded Ray every replica
is on this machine, so the model (preset, local dir, s3:// prefix, hub id) and S3 adapters are
resolved here once, into the local cache, through rayloom.models / rayloom.storage. On a real
cluster the replicas may be on other nodes: s3:// models go to Ray Serve LLM as they are (it
downloads them on each node) and S3 adapters are fetched by each replica when first requested.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rayloom import storage
from rayloom.config import ClusterConfig, RayloomConfig
from rayloom.lineage import read_lineage
from rayloom.models import resolve_model_dir
from rayloom.models.presets import cache_root
from rayloom.serve.adapters import fetch_adapter
from rayloom.serve.limits import RequestLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServePlan:
    model_id: str
    # Handed to Ray Serve LLM as model_source: a local directory, an s3:// prefix or a hub id.
    model_source: str
    # Where the ingress loads the tokenizer from (same kinds of source).
    tokenizer_source: str
    max_model_len: int
    # adapter name -> local directory or s3:// prefix
    adapters: dict[str, str]
    limits: RequestLimits
    cache_dir: str
    # rayloom_lineage.json of the served model (rayloom.lineage), published in its model card.
    lineage: dict | None = None


def is_embedded(cluster: ClusterConfig) -> bool:
    """True when this process runs (or will start) the embedded local Ray: one node, this machine."""
    return not cluster.address and not os.environ.get("RAY_ADDRESS")


def plan_serving(cfg: RayloomConfig, *, resolve_locally: bool | None = None) -> ServePlan:
    serve = cfg.serve
    local = is_embedded(cfg.cluster) if resolve_locally is None else resolve_locally
    model = cfg.model
    if serve.model_path:
        model = dataclasses.replace(model, preset=None, path=serve.model_path)
    if model.preset is not None or local or not (storage.is_s3(model.path) or _looks_like_hub_id(model.path)):
        source = str(resolve_model_dir(model))
    else:
        source = str(model.path)
    max_model_len = _effective_max_model_len(serve.max_model_len, source)
    limits = RequestLimits.from_config(serve, max_model_len)
    if serve.max_prompt_tokens >= max_model_len:
        log.warning("serve.max_prompt_tokens=%d does not fit the %d-token context window; accepting prompts of up "
                    "to %d tokens", serve.max_prompt_tokens, max_model_len, max_model_len - 1)
        limits = dataclasses.replace(limits, max_prompt_tokens=max_model_len - 1)
    cache_dir = str(cache_root(cfg.model) / "serve")
    adapters = {}
    for adapter in serve.lora_adapters:
        if local or not storage.is_s3(adapter.path):
            adapters[adapter.name] = str(fetch_adapter(adapter.path, adapter.name, cache_dir, serve.max_lora_rank))
        else:
            adapters[adapter.name] = adapter.path
    return ServePlan(
        model_id=serve.model_id or cfg.model.name,
        model_source=source,
        tokenizer_source=source,
        max_model_len=max_model_len,
        adapters=adapters,
        limits=limits,
        cache_dir=cache_dir,
        lineage=read_lineage(source),
    )


def _looks_like_hub_id(path: str | None) -> bool:
    return bool(path) and not path.startswith((".", "/", "~")) and not Path(path).exists()


def _model_config(source: str) -> dict | None:
    """The model's config.json from a local directory or an s3:// prefix (None for a hub id)."""
    if storage.is_s3(source):
        if not storage.is_committed(source):  # the replicas refuse it too (models.resolve_model_dir)
            return None
        uri = storage.join(storage.resolve_committed(source), "config.json")
        return json.loads(storage.read_text(uri)) if storage.exists(uri) else None
    config_file = Path(source) / "config.json"
    return json.loads(config_file.read_text()) if config_file.is_file() else None


def _effective_max_model_len(requested: int, source: str) -> int:
    """serve.max_model_len, capped at what the model supports (vLLM refuses a longer window)."""
    config = _model_config(source)
    if config is None:
        return requested
    limit = config.get("max_position_embeddings") or config.get("n_positions") or config.get("max_seq_len")
    if limit and requested > int(limit):
        log.warning("serve.max_model_len=%d exceeds the model's %d positions; serving with %d", requested, limit, limit)
        return int(limit)
    return requested
