"""Resolve `model.*` to a local Hugging Face directory, and load model + tokenizer from it.

Sources: a preset built from config, a local directory, an s3:// prefix or a Hugging Face hub id
(real `snapshot_download`; without network it fails with a message saying so). An s3:// model
must be a committed rayloom artifact: it is read through its commit marker, into a local cache
keyed by URI and version whose files are checked against the marker's sizes (storage.
download_committed), so a half-written export or a partial download is never loaded. A local
committed artifact resolves to its current version's directory, pinned for the whole load.
"""

from __future__ import annotations

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
    if model.path is None:
        raise UserError("model.path is empty and model.preset is not set: name a model")
    path = model.path
    if storage.is_s3(path):
        return _from_s3(model, path)
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")):
        if storage.is_committed(local):
            # One version for the whole load, even if a re-export switches the link meanwhile.
            local = Path(storage.resolve_committed(local))
        if not (local / "config.json").is_file():
            raise UserError(f"model.path={path!r} is not a Hugging Face model directory (no config.json there)")
        return local
    return _from_hub(model, path)


def _from_s3(model: ModelConfig, uri: str) -> Path:
    target = storage.download_committed(uri, cache_root(model) / "models", what=f"model.path={uri!r}:")
    if not (target / "config.json").is_file():
        raise UserError(f"model.path={uri!r}: no config.json in its committed version")
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
