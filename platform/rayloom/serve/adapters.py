"""LoRA adapters to serve: check a peft adapter directory, fetch one from S3 into a local cache."""

from __future__ import annotations

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
    """A local directory holding adapter `name`: `path` itself (its current version when rayloom
    committed it), or the verified local copy of a committed s3:// adapter. An s3:// prefix that is
    not committed (half an upload, another tool's files) is refused, as for models."""
    if not storage.is_s3(path):
        local = Path(path).expanduser().resolve()
        if storage.is_committed(local):
            local = Path(storage.resolve_committed(local))
        _check_adapter_dir(local, name, max_lora_rank)
        return local
    log.info("fetching LoRA adapter %s from %s", name, path)
    local = storage.download_committed(path, Path(cache_dir).expanduser() / "adapters",
                                       what=f"LoRA adapter {name!r}:")
    _check_adapter_dir(local, name, max_lora_rank)
    return local
