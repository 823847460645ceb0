"""The shape of the model a run trains, read from the config without loading any weights.

Sources, first match wins: `plan.shape` (a known public shape), `plan.model_config` (a Hugging Face
config.json), a preset's own settings (`model.*`; its built config.json when the preset is already
cached, whose vocabulary is the trained tokenizer's), or `model.path` when it is a local directory.
Llama-family decoders only (Llama, Mistral, Qwen2, TinyLlama): embedding, N x (RMSNorm, attention with
grouped KV heads, RMSNorm, SwiGLU MLP), final RMSNorm, LM head.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelShape:
    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_size(self) -> int:
        """Width of the K (or V) projection: KV heads x head dim."""
        return self.num_kv_heads * self.head_dim

    # --- parameter counts (each weight matrix in_features x out_features, no biases) ---
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one decoder layer, by the module name peft targets."""
        h, kv, f = self.hidden_size, self.kv_size, self.intermediate_size
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}

    @property
    def layer_params(self) -> int:
        """One decoder layer: its seven projections plus two RMSNorm weights."""
        return sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        return (self.embedding_params + self.lm_head_params + self.num_layers * self.layer_params
                + self.hidden_size)  # + the final norm

    @property
    def largest_layer_params(self) -> int:
        """The biggest single parameter tensor (what ZeRO-3 must gather at once)."""
        return max(self.embedding_params, max(i * o for i, o in self.linear_shapes().values()))


# Public configs (config.json of each model on the Hugging Face hub), for sizing without the files.
KNOWN = {
    "tinyllama-1.1b": ModelShape("tinyllama-1.1b", 32000, 2048, 5632, 22, 32, 4),
    "llama-3.2-1b": ModelShape("llama-3.2-1b", 128256, 2048, 8192, 16, 32, 8, tie_word_embeddings=True),
    "llama-3.1-8b": ModelShape("llama-3.1-8b", 128256, 4096, 14336, 32, 32, 8),
    "llama-3.1-70b": ModelShape("llama-3.1-70b", 128256, 8192, 28672, 80, 64, 8),
}

_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2"}


def shape_from_hf_config(config: dict, name: str = "hf") -> ModelShape:
    """A ModelShape from the fields of a Hugging Face config.json."""
    model_type = config.get("model_type", "")
    if model_type and model_type not in _LLAMA_LIKE:
        log.warning("model_type %r is not a Llama-family decoder; the memory model assumes one", model_type)
    try:
        heads = int(config["num_attention_heads"])
        return ModelShape(
            name=name,
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
    except KeyError as exc:
        raise UserError(f"the model's config.json has no {exc.args[0]!r}: not a decoder config the planner "
                        "can read; set plan.shape to a known shape instead") from None


def _read_config_json(path: Path, name: str) -> ModelShape:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"plan: no config.json at {file}")
    return shape_from_hf_config(json.loads(file.read_text()), name)


def model_shape(cfg: RayloomConfig) -> ModelShape:
    """The shape of the model this run trains (or the one plan.* names)."""
    plan, model = cfg.plan, cfg.model
    if plan.shape:
        return KNOWN[plan.shape]
    if plan.model_config:
        return _read_config_json(Path(plan.model_config).expanduser(), model.name)
    if model.preset is not None:
        from rayloom.models.presets import preset_dir

        built = preset_dir(model) / "config.json"
        if built.is_file():  # the trained tokenizer may hold a few tokens fewer than model.vocab_size
            return _read_config_json(built, model.name)
        return ModelShape(model.name, model.vocab_size, model.hidden_size, model.intermediate_size,
                          model.num_layers, model.num_heads, model.num_kv_heads)
    local = Path(str(model.path)).expanduser()
    if (local / "config.json").is_file():
        return _read_config_json(local, model.name)
    raise UserError(f"plan: model.path={model.path!r} is not a local model directory, and the planner reads "
                    "shapes without downloading; set plan.model_config=/path/to/config.json or plan.shape="
                    f"one of {', '.join(KNOWN)}")
