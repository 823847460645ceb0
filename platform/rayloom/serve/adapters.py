"""LoRA adapters to serve: check a peft adapter directory, fetch one from S3 into a local cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from rayloom import storage
from rayloom.errors import UserError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _check_adapter_dir(path: Path, name: str, max_lora_rank: int) -> None:
    """A peft adapter vLLM can load: config + weights, a LoRA whose rank fits the engine."""
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise UserError(f"LoRA adapter {name!r} at {path}: no {ADAPTER_CONFIG} (not a peft adapter directory)")
    if not any((path / weights).is_file() for weights in _WEIGHTS):
        raise UserError(f"LoRA adapter {name!r} at {path}: no adapter weights ({' or '.join(_WEIGHTS)})")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"LoRA adapter {name!r}: peft_type {config.get('peft_type')!r} is not LORA")
    rank = int(config.get("r", 0))
    if rank > max_lora_rank:
        raise UserError(f"LoRA adapter {name!r} has rank {rank} > serve.max_lora_rank={max_lora_rank}; "
                        f"raise serve.max_lora_rank")


def fetch_adapter(path: str, name: str, cache_dir: str | Path, max_lora_rank: int) -> Path:
    """A local directory holding adapter `name`: `path` itself, or a cached copy of an s3:// prefix."""
    from filelock import FileLock

    if not storage.is_s3(path):
        local = Path(path).expanduser().resolve()
        _check_adapter_dir(local, name, max_lora_rank)
        return local
    key = hashlib.sha256(path.rstrip("/").encode()).hexdigest()[:12]
    target = Path(cache_dir).expanduser() / f"{name}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not storage.is_committed(target):
            if not storage.exists(storage.join(path, ADAPTER_CONFIG)):
                raise UserError(f"LoRA adapter {name!r}: no {ADAPTER_CONFIG} under {path}")
            log.info("downloading LoRA adapter %s from %s", name, path)
            with storage.local_copy(path, cache_dir=target.parent) as tmp:
                storage.commit_dir(tmp, target)
    _check_adapter_dir(target, name, max_lora_rank)
    return target
