"""PEFT wrapping through peft (LoRA, DoRA), QLoRA's CPU refusal, and adapter merge + export."""

from __future__ import annotations

import pytest
import torch

from rayloom.config import PeftConfig
from rayloom.errors import UserError
from rayloom.models import load_model
from rayloom.models.peft_wrap import check_peft_supported, count_parameters, merge_adapter, wrap_with_peft


def _lora(method: str = "lora", **kw) -> PeftConfig:
    return PeftConfig(method=method, r=4, alpha=8, dropout=0.0, **kw)


def test_lora_leaves_only_adapter_weights_trainable(tiny_model_dir):
    model = wrap_with_peft(load_model(tiny_model_dir), _lora())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    total, num_trainable = count_parameters(model)
    assert 0 < num_trainable < total / 10


def test_dora_adds_magnitude_vectors(tiny_model_dir):
    model = wrap_with_peft(load_model(tiny_model_dir), _lora("dora"))
    assert any("lora_magnitude_vector" in n for n, p in model.named_parameters() if p.requires_grad)


def test_unknown_target_module_is_a_user_error(tiny_model_dir):
    with pytest.raises(UserError, match="no module named qkv_proj"):
        wrap_with_peft(load_model(tiny_model_dir), _lora(target_modules=["q_proj", "qkv_proj"]))


def test_qlora_on_cpu_is_a_clear_user_error():
    with pytest.raises(UserError, match="QLoRA .* needs CUDA GPUs"):
        check_peft_supported(PeftConfig(method="qlora"), use_gpu=False)
    check_peft_supported(PeftConfig(method="lora"), use_gpu=False)


def test_merged_export_matches_the_adapter_and_loads_in_transformers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = wrap_with_peft(load_model(tiny_model_dir), _lora())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 400, (2, 24))
    for _ in range(3):  # a few real steps so the adapter is not the identity
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    merged_dir = merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert (merged_dir / "tokenizer.json").is_file() and not any(merged_dir.glob("adapter_*"))
