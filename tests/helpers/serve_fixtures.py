"""Helpers for the serving tests: a real peft LoRA adapter on the tiny model.

Imported by tests/unit/test_serve_*.py and tests/integration/test_serve_*.py as
`from helpers.serve_fixtures import ...` (tests/ is on sys.path).
"""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(model_dir: str | Path, out_dir: str | Path, *, rank: int = 8, seed: int = 1) -> Path:
    """Save a peft LoRA adapter for `model_dir` whose lora_B is non-zero, so it changes outputs.

    peft initialises lora_B to zeros (an adapter that does nothing until trained); a trained
    adapter is what serving sees, so the weights here are random and large enough to move the
    greedy tokens of a random tiny model.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from rayloom.models import load_model

    torch.manual_seed(seed)
    model = load_model(model_dir)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.normal_(0.0, 0.5)
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out
