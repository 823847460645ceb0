"""Training on CUDA GPUs: bf16/fp16 ZeRO on a GPU worker, and QLoRA's 4-bit base (skipped without CUDA)."""

from __future__ import annotations

import importlib.util

import pytest
from helpers.train_fixtures import pretrain_rows, sft_rows, train_overrides

from rayloom.config import compose

pytestmark = [pytest.mark.gpu, pytest.mark.integration]


def _gpu_overrides(root, *extra):
    return train_overrides(root, "train.use_gpu=true", "train.num_workers=1", "train.max_steps=6",
                           "train.checkpoint_every=6", *extra)


@pytest.mark.parametrize("deepspeed,precision", [("zero2", "bf16"), ("zero3", "bf16"), ("zero2", "fp16")])
def test_zero_on_a_gpu_worker_lowers_the_loss(ray_local, tiny_model_dir, tmp_path, deepspeed, precision):
    from rayloom.train import train

    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=1) * 16
    cfg = compose("train", _gpu_overrides(tmp_path, f"deepspeed={deepspeed}", f"deepspeed.precision={precision}",
                                          f"train.run_name=gpu-{deepspeed}-{precision}"))
    result = train(cfg, datasets={"train": ray_local.data.from_items(rows)})
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.history[-1]["memory_gib"] > 0
    assert 0 < result.history[-1]["mfu"] < 1


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="QLoRA needs bitsandbytes")
def test_qlora_trains_an_adapter_on_a_4bit_base(ray_local, tiny_model_dir, tmp_path):
    from rayloom.train import train

    rows = sft_rows(tiny_model_dir, seq_len=64, num=16)
    cfg = compose("train", _gpu_overrides(tmp_path, "peft=qlora", "objective=sft", "deepspeed=zero2",
                                          "deepspeed.precision=bf16", "train.run_name=gpu-qlora", "train.lr=1e-2"))
    result = train(cfg, datasets={"train": ray_local.data.from_items(rows)})
    assert result.adapter_dir and result.model_dir
    assert result.history[-1]["loss"] < result.history[0]["loss"]
