"""A real ASHA sweep: 4 trials, each a Ray Train run of the real trainer (DeepSpeed on CPU, tiny
model); ASHA stops the trials that lag at an evaluation, and the sweep reports and writes the best."""

from __future__ import annotations

import csv
import io

import pytest
import yaml
from helpers.tune_fixtures import sweep_overrides, write_sweep_shards

from rayloom import storage
from rayloom.config import compose

# Long suite, run by `make test-all`: about 4 min on 2 cores; `make test` runs a sweep in test_tune_resume.py
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Sequential trials in this order: the first good learning rate sets the bar at the first
# evaluation; the much smaller ones fall below it there and are stopped.
LRS = [3e-3, 1e-6, 2e-6, 1e-3]


def test_asha_sweep_stops_bad_trials_and_reports_the_best(ray_local, tiny_model_dir, tmp_path):
    from rayloom.tune import sweep

    data = write_sweep_shards(tiny_model_dir, str(tmp_path / "data"))
    cfg = compose("tune", sweep_overrides(
        tmp_path, data, "tune=asha", "tune.name=asha-test", "tune.search_alg=grid", "tune.num_samples=1",
        "tune.max_concurrent_trials=1", "tune.grace_period=1", "tune.reduction_factor=2",
        "~tune.space.train.warmup_steps", "~tune.space.train.lr", f"+tune.space.train.lr={{type: grid, values: {LRS}}}"))
    result = sweep(cfg)

    assert len(result.trials) == 4 and not result.interrupted
    assert all(t.status in ("finished", "stopped early") for t in result.trials), [t.error for t in result.trials]
    by_lr = {t.values["train.lr"]: t for t in result.trials}
    # The tiny learning rates were stopped at the first rung; the good ones ran all evaluations.
    assert by_lr[1e-6].status == "stopped early" and by_lr[2e-6].status == "stopped early"
    assert by_lr[3e-3].status == "finished" and by_lr[3e-3].num_reports == 4
    stopped = [t for t in result.trials if t.status == "stopped early"]
    assert all(t.num_reports < 4 for t in stopped)
    # Stopping saved compute: fewer trial-steps than 4 full runs.
    assert result.total_steps < 4 * 8

    # The best is the best validation loss any trial reported, with its checkpoint.
    assert result.best_values["train.lr"] in (3e-3, 1e-3)
    best_seen = min(t.best_metric for t in result.trials if t.best_metric is not None)
    assert result.best_metric == best_seen
    assert storage.is_committed(result.best_checkpoint)

    # Results: a trial table, a PNG plot and the best config as an experiment YAML that composes.
    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{result.sweep_dir}/trials.csv"))))
    assert len(rows) == 4 and {r["status"] for r in rows} >= {"finished", "stopped early"}
    assert storage.read_bytes(result.plot_path)[:8] == b"\x89PNG\r\n\x1a\n"
    best = yaml.safe_load(storage.read_text(result.best_config_path))
    assert best["train"]["lr"] == result.best_values["train.lr"]
    assert result.best_checkpoint in storage.read_text(result.best_config_path)
