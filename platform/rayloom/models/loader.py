"""Resolve `model.*` to a local Hugging Face directory, and load model + tokenizer from it.

Sources: a preset built from config, a local directory, an s3:// prefix (downloaded once into
the cache, keyed by URI) or a Hugging Face hub id (real `snapshot_download`; without network it
fails with a message saying so).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from rayloom import storage
from rayloom.config import ModelConfig
from rayloom.errors import UserError
from rayloom.models.presets import build_preset, cache_root

log = logging.getLogger(__name__)


def resolve_model_dir(model: ModelConfig) -> Path:
    if model.preset is not None:
        return build_preset(model)
    assert model.path is not None
    path = model.path
    if storage.is_s3(path):
        return _from_s3(model, path)
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")):
        if not (local / "config.json").is_file():
            raise UserError(f"model.path={path!r} is not a Hugging Face model directory (no config.json there)")
        return local
    return _from_hub(model, path)


def _from_s3(model: ModelConfig, uri: str) -> Path:
    from filelock import FileLock

    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:12]
    target = cache_root(model) / "models" / f"s3-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not storage.is_committed(target):
            if not storage.exists(storage.join(uri, "config.json")):
                raise UserError(f"model.path={uri!r}: no config.json under that S3 prefix")
            log.info("downloading model %s", uri)
            with storage.local_copy(uri, cache_dir=target.parent) as tmp:
                storage.commit_dir(tmp, target)
    return target


def _from_hub(model: ModelConfig, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache_root(model) / "hub")))
    except Exception as exc:  # offline, unknown repo, gated repo: all user-fixable
        raise UserError(
            f"could not fetch model.path={repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Without network access, point model.path "
            "at a local directory or an s3:// prefix."
        ) from None


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def load_model(model_dir: str | Path, dtype: str = "float32", trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
