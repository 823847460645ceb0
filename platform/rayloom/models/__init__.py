"""Models kit: build tiny models from config, resolve model sources, load model + tokenizer."""

from rayloom.models.loader import load_model, load_tokenizer, resolve_model_dir

__all__ = ["load_model", "load_tokenizer", "resolve_model_dir"]
