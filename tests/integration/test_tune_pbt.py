"""PBT over real training runs: the lagging trial exploits the better one (continues from a copy of
its trainer checkpoint, restored by DeepSpeed) and explores (its own perturbed learning rate takes
effect after the restore)."""

from __future__ import annotations

import math

import pytest
from helpers.tune_fixtures import sweep_overrides, write_sweep_shards

from rayloom.config import compose
from rayloom.train import RunPaths
from rayloom.train import checkpoints as ckpts
from rayloom.tune import sweep

# About 3 minutes here (two concurrent trials plus the exploited trial's restart): slow, not in CI.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_STEPS = 8


def _schedule(step: int, min_ratio: float) -> float:
    """The trainer's LR factor (no warm-up, cosine to min_ratio) after `step` scheduler steps."""
    progress = step / MAX_STEPS
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def test_pbt_exploits_and_restores_checkpoints(ray_local, tiny_model_dir, tmp_path):
    data = write_sweep_shards(tiny_model_dir, str(tmp_path / "data"))
    cfg = compose("tune", sweep_overrides(
        tmp_path, data, "tune=pbt", "tune.name=pbt-test", "tune.num_samples=1", "tune.max_concurrent_trials=2",
        "tune.perturbation_interval=1", "tune.quantile_fraction=0.5", "~tune.space.train.weight_decay",
        "~tune.space.train.lr", "+tune.space.train.lr={type: grid, values: [0.003, 1e-6]}"))
    result = sweep(cfg)

    assert len(result.trials) == 2 and not result.interrupted
    assert all(t.status == "finished" for t in result.trials), [t.error for t in result.trials]
    exploiters = [t for t in result.trials if t.restored_from]
    assert exploiters, "no trial exploited another's checkpoint"
    trial = exploiters[0]
    donor = next(t for t in result.trials if t.trial_id == trial.restored_from[0])
    assert donor.trial_id != trial.trial_id

    # The exploiting trial continued from the donor's checkpoint: its training run was seeded
    # with a copy of it, and DeepSpeed resumed from that step (not from scratch).
    restored = [p for p in trial.curve if p["restored_from"] == donor.trial_id]
    assert restored
    assert trial.run_name.startswith(f"pbt-test-{trial.trial_id}-from-{donor.trial_id}-s")
    state = ckpts.read_state(ckpts.latest_complete(RunPaths.of(cfg, trial.run_name).run_dir)[1])
    assert state.resumes and state.resumes[0]["from_step"] > 0
    assert state.resumes[0]["checkpoint"].startswith(f"checkpoint_{state.resumes[0]['from_step']:08d}")
    assert state.step == MAX_STEPS
    # The copy was retargeted to the trial's own hyperparameters (DeepSpeed restores the LR
    # scheduler's base learning rates from the checkpoint).
    import torch

    seeded = ckpts.list_checkpoints(RunPaths.of(cfg, trial.run_name).run_dir)[0][1]
    states = torch.load(f"{seeded}/ds/{ckpts.read_state(seeded).ds_tag}/mp_rank_00_model_states.pt",
                        map_location="cpu", weights_only=False)
    assert states["lr_scheduler"]["base_lrs"] == [restored[0]["values"]["train.lr"]] * len(
        states["lr_scheduler"]["base_lrs"])
    # Steps after the restore were trained with the trial's own (explored) learning rate on the
    # trainer's schedule, not the donor's restored one.
    for point in restored:
        expected = point["values"]["train.lr"] * _schedule(point["step"] - 1, cfg.train.min_lr_ratio)
        assert math.isclose(point["lr"], expected, rel_tol=1e-4), (point, expected)
