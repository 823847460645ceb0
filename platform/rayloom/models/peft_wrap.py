"""PEFT through the peft library: LoRA / DoRA on chosen modules, QLoRA on GPU, adapter merge.

Adapters are saved in peft's own format (adapter_config.json + adapter_model.safetensors), which
vLLM serves as a LoRA adapter; `merge_adapter` writes a standard Hugging Face directory with the
adapter folded into the base weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rayloom.config import PeftConfig
from rayloom.data.tokenization import TOKENIZER_FILES
from rayloom.errors import UserError

log = logging.getLogger(__name__)

# Tokenizer and generation files copied next to exported weights so the directory is self-contained.
# Every file the data job hashes as the tokenizer's: an export then hashes as its base does, so
# shards made with the base's tokenizer pass the training check (rayloom.train._data) on the export.
SIDE_FILES = (*TOKENIZER_FILES, "generation_config.json", "rayloom_preset.json")


def uses_peft(peft: PeftConfig) -> bool:
    return peft.method != "none"


def check_peft_supported(peft: PeftConfig, use_gpu: bool) -> None:
    """QLoRA's 4-bit base needs bitsandbytes on a CUDA GPU; say so before anything starts."""
    if peft.method != "qlora":
        return
    if not use_gpu:
        raise UserError("invalid config value peft.method='qlora': QLoRA quantizes the base model to 4 bits with "
                        "bitsandbytes, which needs CUDA GPUs. Set train.use_gpu=true on a GPU cluster, or use "
                        "peft=lora (same adapters, full-precision base) on CPU.")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("peft.method='qlora' needs the bitsandbytes package on the training nodes "
                        "(pip install bitsandbytes, or add it to cluster.pip)")


def build_lora_config(peft: PeftConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=list(peft.target_modules),
        modules_to_save=list(peft.modules_to_save) or None,
        bias=peft.bias,
        use_dora=peft.method == "dora",
    )


def load_quantized_base(model_dir: str | Path, peft: PeftConfig, device_index: int):
    """The frozen 4-bit base of QLoRA, on this worker's GPU, prepared for k-bit training."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=peft.quant_type,
                               bnb_4bit_compute_dtype=getattr(torch, peft.compute_dtype),
                               bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=quant,
                                                 device_map={"": device_index},
                                                 dtype=getattr(torch, peft.compute_dtype))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def wrap_with_peft(model, peft: PeftConfig):
    """Wrap a causal LM in a PeftModel; only the adapter (and modules_to_save) stay trainable."""
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in peft.target_modules if m not in present]
    if missing:
        raise UserError(f"invalid config value peft.target_modules={list(peft.target_modules)!r}: the model has no "
                        f"module named {', '.join(missing)} (it has e.g. {', '.join(sorted(present - {''})[:12])})")
    wrapped = get_peft_model(model, build_lora_config(peft))
    if getattr(model, "is_gradient_checkpointing", False):
        # With a frozen embedding, checkpointed blocks would see inputs that need no grad.
        wrapped.enable_input_require_grads()
    return wrapped


def count_parameters(model) -> tuple[int, int]:
    """(all parameters, trainable parameters); ZeRO-3 placeholders count their full size."""
    total = trainable = 0
    for param in model.parameters():
        numel = getattr(param, "ds_numel", None) or param.numel()
        total += numel
        if param.requires_grad:
            trainable += numel
    return total, trainable


def copy_side_files(src_dir: str | Path, dst_dir: str | Path) -> None:
    for name in SIDE_FILES:
        src = Path(src_dir) / name
        if src.is_file():
            shutil.copy2(src, Path(dst_dir) / name)


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Fold a peft adapter into its base model and save a plain Hugging Face directory."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir} is not a peft adapter directory (no adapter_config.json)")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    copy_side_files(base_dir, out)
    log.info("merged adapter %s into %s -> %s", adapter_dir, base_dir, out)
    return out
