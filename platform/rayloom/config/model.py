"""Model group: where the weights and tokenizer come from."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import one_of, positive, require

PRESETS = ("tiny", "tiny-2l")


@dataclass
class ModelConfig:
    # Display name; also the served model id unless serve.model_id overrides it.
    name: str = "tiny"
    # Build a model from config (random weights + an offline-trained BPE tokenizer) ...
    preset: str | None = "tiny"
    # ... or load one: a local HF directory, an s3:// prefix or a Hugging Face hub id.
    path: str | None = None
    # Architecture of the preset (ignored when `path` is set).
    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 1024
    # The preset's tokenizer gives every digit its own token (as Llama 3's does): numbers share
    # their digits' embeddings, so what the model learns about some numbers carries to others.
    split_digits: bool = False
    seed: int = 0
    # dtype the weights are saved in and loaded as for training ("float32" on CPU).
    dtype: str = "float32"
    trust_remote_code: bool = False
    # Where built/downloaded models are cached; empty -> $RAYLOOM_CACHE_DIR or ~/.cache/rayloom.
    cache_dir: str = ""

    def __post_init__(self) -> None:
        require(
            (self.preset is None) != (self.path is None),
            "model.preset",
            "set exactly one of model.preset (build from config) or model.path (load)",
            self.preset,
        )
        if self.preset is not None:
            one_of(self.preset, PRESETS, "model.preset")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                    "num_kv_heads", "max_position_embeddings"):
            positive(getattr(self, key), f"model.{key}")
        require(self.vocab_size >= 300, "model.vocab_size", "a byte-level BPE needs at least 300 tokens",
                self.vocab_size)
        require(self.hidden_size % self.num_heads == 0, "model.hidden_size",
                f"must be divisible by model.num_heads={self.num_heads}", self.hidden_size)
        require(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
                f"must divide model.num_heads={self.num_heads}", self.num_kv_heads)
        one_of(self.dtype, ("float32", "bfloat16", "float16"), "model.dtype")
