"""DeepSpeed config builder, batch geometry and the training config checks (no Ray, no engines)."""

from __future__ import annotations

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.train import check_config
from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config


def _ds(*overrides: str) -> dict:
    cfg = compose("train", list(overrides))
    return build_deepspeed_config(cfg.train, cfg.deepspeed, build_batch_geometry(cfg.train, cfg.deepspeed))


@pytest.mark.parametrize("preset,stage", [("zero0", 0), ("zero1", 1), ("zero2", 2), ("zero3", 3)])
def test_zero_stage_presets(preset, stage):
    zero = _ds(f"deepspeed={preset}")["zero_optimization"]
    assert zero["stage"] == stage
    assert ("allgather_bucket_size" in zero) == (stage in (1, 2))
    assert ("stage3_prefetch_bucket_size" in zero) == (stage == 3)
    assert "offload_optimizer" not in zero and "offload_param" not in zero


def test_cpu_offload_presets_select_devices_and_cpu_adam():
    z2 = _ds("deepspeed=zero2_offload")
    assert z2["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    # With offload DeepSpeed picks its CPU Adam; torch_adam would override that choice.
    assert "torch_adam" not in z2["optimizer"]["params"]
    z3 = _ds("deepspeed=zero3_offload")["zero_optimization"]
    assert z3["offload_param"]["device"] == "cpu" and z3["offload_optimizer"]["device"] == "cpu"
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True


def test_nvme_offload_carries_path_and_aio():
    cfg = _ds("deepspeed=zero3_nvme", "deepspeed.nvme_path=/scratch/nvme")
    assert cfg["zero_optimization"]["offload_param"] == {"device": "nvme", "pin_memory": False,
                                                         "nvme_path": "/scratch/nvme"}
    assert cfg["aio"]["block_size"] > 0


def test_cpu_without_offload_uses_torch_adamw_and_gpu_uses_fused():
    cpu = _ds("deepspeed=zero2")["optimizer"]
    assert cpu["type"] == "AdamW" and cpu["params"]["torch_adam"] is True
    gpu = _ds("deepspeed=zero2", "train.use_gpu=true")
    assert "torch_adam" not in gpu["optimizer"]["params"]
    assert _ds("deepspeed=zero2_offload", "train.use_gpu=true")["zero_optimization"]["offload_optimizer"][
        "pin_memory"] is True


def test_precision_and_loss_scaling():
    assert _ds("deepspeed.precision=bf16")["bf16"]["enabled"] is True
    fp16 = _ds("deepspeed.precision=fp16", "deepspeed.loss_scale=128", "train.use_gpu=true")["fp16"]
    assert fp16["enabled"] is True and fp16["loss_scale"] == 128
    dynamic = _ds("deepspeed.precision=fp16", "train.use_gpu=true")["fp16"]
    assert dynamic["loss_scale"] == 0 and dynamic["initial_scale_power"] == 16


def test_clipping_buckets_overlap_and_activation_checkpointing():
    cfg = _ds("train.grad_clip=0.5", "deepspeed.overlap_comm=true", "deepspeed.reduce_bucket_size=1000",
              "train.gradient_checkpointing=true", "deepspeed.partition_activations=true")
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"]["overlap_comm"] is True and cfg["zero_optimization"]["reduce_bucket_size"] == 1000
    assert cfg["activation_checkpointing"]["partition_activations"] is True


def test_autotp_section():
    cfg = _ds("deepspeed=autotp")
    assert cfg["tensor_parallel"] == {"autotp_size": 2} and cfg["zero_optimization"]["stage"] == 1
    # DeepSpeed checks train_batch_size against the whole world before building the TP groups.
    assert "train_batch_size" not in cfg
    c = compose("train", ["deepspeed=autotp"])
    assert build_batch_geometry(c.train, c.deepspeed).global_batch_size == c.train.micro_batch_size


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_global_batch_stays_fixed_across_worker_counts(workers):
    cfg = compose("train", [f"train.num_workers={workers}", "train.micro_batch_size=2", "train.global_batch_size=16"])
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed)
    assert geometry.global_batch_size == 16
    assert geometry.grad_accum == 16 // (2 * workers)
    ds = build_deepspeed_config(cfg.train, cfg.deepspeed, geometry)
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == geometry.grad_accum


def test_without_global_batch_there_is_no_accumulation():
    cfg = compose("train", ["train.num_workers=2", "train.micro_batch_size=3"])
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed)
    assert (geometry.grad_accum, geometry.global_batch_size) == (1, 6)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["train.on_existing=sometimes"], "train.on_existing"),
        (["train.keep_checkpoints=0"], "train.keep_checkpoints"),
        (["train.warmup_steps=100", "train.max_steps=50"], "train.warmup_steps"),
        (["train.run_name=a/b"], "train.run_name"),
        (["peft.bias=some"], "peft.bias"),
        (["deepspeed.cpu_checkpointing=true"], "deepspeed.cpu_checkpointing"),
        (["deepspeed=autotp", "deepspeed.zero_stage=2"], "deepspeed.tensor_parallel_size"),
        (["tracking.log_every=0"], "tracking.log_every"),
        (["train.adam_beta2=1.0"], "train.adam_beta2"),
    ],
)
def test_new_keys_fail_at_compose_time(overrides, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        compose("train", overrides)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["deepspeed.precision=fp16"], "fp16 mixed precision needs GPUs"),
        (["peft=qlora"], "needs CUDA GPUs"),
        (["deepspeed=autotp", "peft=lora"], "AutoTP"),
        (["deepspeed=autotp", "train.num_workers=3"], "must divide"),
    ],
)
def test_cross_group_mistakes_fail_before_anything_starts(overrides, needle):
    with pytest.raises(UserError, match=needle):
        check_config(compose("train", overrides))


def test_experiment_presets_compose_for_training():
    for experiment in ("tiny_pretrain", "tiny_lora_sft", "tiny_zero3_offload"):
        cfg = compose("train", [f"experiment={experiment}"])
        check_config(cfg)
