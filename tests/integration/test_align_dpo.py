"""Preference tuning through Ray Train + DeepSpeed on CPU (tiny-2l, 2 workers).

DPO starts at log(2) when the policy is its reference and falls; reward accuracy on held-out pairs
of a learnable set passes 0.8 within a bounded number of steps; the LoRA reference obtained by
disabling the adapter gives the same losses as an explicit frozen copy; ZeRO-3 partitions both the
policy and its frozen reference copy and still starts at log(2).
"""

from __future__ import annotations

import math

import pytest
from helpers.align_fixtures import align_overrides, learnable_pairs

import rayloom.align  # noqa: F401 - registers objective=dpo|ipo|orpo with rayloom.train
from rayloom.config import compose
from rayloom.train import train

pytestmark = pytest.mark.integration

STEPS = 12
# Constant learning rate: runs of different lengths then take identical steps.
COMMON = ("objective=dpo", "objective.beta=0.5", "train.min_lr_ratio=1.0", "train.checkpoint_every=100")


@pytest.fixture(scope="module")
def pairs(tiny_model_dir):
    return {"train": learnable_pairs(tiny_model_dir, 96, seq_len=40),
            "validation": learnable_pairs(tiny_model_dir, 16, seq_len=40, offset=96)}


def _train(ray_local, root, pairs, *overrides):
    cfg = compose("train", align_overrides(root, *COMMON, *overrides))
    datasets = {split: ray_local.data.from_items(rows) for split, rows in pairs.items()}
    return cfg, train(cfg, datasets=datasets)


@pytest.fixture(scope="module")
def lora_run(ray_local, pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo-lora")
    return _train(ray_local, root, pairs, "peft=lora", "peft.dropout=0.0", "deepspeed=zero2", "train.lr=2e-2", f"train.max_steps={STEPS}",
                  "train.eval_every=4", "train.eval_batches=2", "train.run_name=dpo-lora")


def test_dpo_starts_at_log2_and_falls(lora_run):
    _, result = lora_run
    losses = [h["loss"] for h in result.history]
    assert len(losses) == STEPS
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert result.history[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert result.history[0]["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05


def test_held_out_preference_accuracy_passes_080(lora_run):
    _, result = lora_run
    evaluated = [h for h in result.history if "val_reward_accuracy" in h]
    assert [h["step"] for h in evaluated] == [4, 8, 12]
    assert evaluated[-1]["val_reward_accuracy"] > 0.8
    assert evaluated[-1]["val_reward_margin"] > evaluated[0]["val_reward_margin"] > 0
    assert evaluated[-1]["val_loss"] < math.log(2)


def test_metrics_report_rewards_logps_and_kl(lora_run):
    _, result = lora_run
    last = result.history[-1]
    for key in ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "logps_chosen",
                "logps_rejected", "pref_accuracy", "kl_to_ref", "val_kl_to_ref", "val_pref_accuracy"):
        assert key in last, key
    assert last["reward_margin"] == pytest.approx(last["rewards_chosen"] - last["rewards_rejected"], abs=1e-6)
    assert last["kl_to_ref"] > 0  # the policy moved away from its reference
    assert last["logps_chosen"] < 0 and last["logps_rejected"] < 0
    assert last["num_trainable"] < last["num_params"] / 10  # LoRA: no second full copy was trained


# Long variant, run by `make test-all`: `make test` keeps the LoRA DPO run (loss from log 2, held-out accuracy, metrics)
@pytest.mark.slow
def test_disabled_adapter_reference_equals_a_frozen_copy(ray_local, pairs, lora_run, tmp_path):
    _, auto = lora_run
    cfg, copied = _train(ray_local, tmp_path, pairs, "peft=lora", "peft.dropout=0.0", "deepspeed=zero2", "train.lr=2e-2",
                         "train.max_steps=4", "train.eval_batches=0", "objective.reference=copy",
                         "train.run_name=dpo-lora-copy")
    assert cfg.objective.reference == "copy"
    for a, b in zip(auto.history[:4], copied.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["reward_margin"] == pytest.approx(a["reward_margin"], abs=1e-5)
        assert b["kl_to_ref"] == pytest.approx(a["kl_to_ref"], abs=1e-5)


# Long variant, run by `make test-all`: `make test` keeps the LoRA DPO run (loss from log 2, held-out accuracy, metrics)
@pytest.mark.slow
def test_zero3_full_finetune_with_a_partitioned_reference(ray_local, pairs, tmp_path):
    _, result = _train(ray_local, tmp_path, pairs, "deepspeed=zero3", "train.lr=1e-3", "train.max_steps=3",
                       "train.eval_batches=0", "train.run_name=dpo-zero3")
    losses = [h["loss"] for h in result.history]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses[-1] < losses[0]
    # ZeRO-3 partitioned the policy: each rank holds about half the parameters.
    assert result.history[-1]["params_local"] < 0.75 * result.history[-1]["num_params"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ("deepspeed=zero0", "peft=lora", "objective=ipo"),
    ("deepspeed=zero3", "peft=lora"),
    ("deepspeed=zero2_bf16", "peft=lora", "objective=orpo"),
    ("deepspeed=zero2", "objective.loss_type=robust", "objective.label_smoothing=0.1"),
], ids=["zero0-lora-ipo", "zero3-lora-dpo", "zero2-bf16-lora-orpo", "zero2-full-rdpo"])
def test_objective_matrix_trains(ray_local, pairs, tmp_path, overrides):
    _, result = _train(ray_local, tmp_path, pairs, *overrides, "train.lr=1e-2", "train.max_steps=4",
                       "train.eval_batches=0", "train.run_name=dpo-matrix")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    if "objective=ipo" in overrides:
        assert losses[0] == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-4)  # policy == reference: gap 0
    elif "objective=orpo" not in overrides:
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3 if "bf16" in str(overrides) else 1e-5)
