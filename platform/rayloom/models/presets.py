"""Build a preset Llama-family model with random weights, saved as a standard HF directory.

The directory (config.json, model.safetensors, tokenizer files, generation_config.json) loads
in transformers, DeepSpeed and vLLM. It is cached by a hash of the preset's settings; concurrent
builders (several Ray workers on one node) are serialised by a file lock and the directory
appears atomically (built aside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rayloom.config import ModelConfig

log = logging.getLogger(__name__)

# Bump when the build recipe changes, so caches built by older code are not reused.
KIT_VERSION = 3
_ARCH_FIELDS = ("preset", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "max_position_embeddings", "seed", "dtype")


def cache_root(model: ModelConfig) -> Path:
    root = model.cache_dir or os.environ.get("RAYLOOM_CACHE_DIR") or "~/.cache/rayloom"
    return Path(root).expanduser()


def _spec(model: ModelConfig) -> dict:
    spec = {name: getattr(model, name) for name in _ARCH_FIELDS}
    if model.split_digits:  # only when set, so the presets built before the option keep their hash
        spec["split_digits"] = True
    return spec


def preset_hash(model: ModelConfig) -> str:
    spec = _spec(model)
    spec["kit_version"] = KIT_VERSION
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def preset_dir(model: ModelConfig) -> Path:
    return cache_root(model) / "models" / f"{model.preset}-{preset_hash(model)}"


def build_preset(model: ModelConfig) -> Path:
    """Return the cached preset directory, building it on first use."""
    from filelock import FileLock

    target = preset_dir(model)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("building model preset %s at %s", model.preset, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _build_into(model, staging)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _build_into(model: ModelConfig, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from rayloom.models.tokenizer_kit import END_OF_TURN, train_tokenizer

    tokenizer = train_tokenizer(model.vocab_size, split_digits=model.split_digits)
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model.hidden_size,
        intermediate_size=model.intermediate_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        num_key_value_heads=model.num_kv_heads,
        max_position_embeddings=model.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype=model.dtype,
    )
    torch.manual_seed(model.seed)
    llama = LlamaForCausalLM(config).to(getattr(torch, model.dtype))
    llama.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end_id, pad_token_id=tokenizer.pad_token_id
    )
    llama.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "rayloom_preset.json").write_text(
        json.dumps(_spec(model) | {"kit_version": KIT_VERSION}, indent=2)
    )
