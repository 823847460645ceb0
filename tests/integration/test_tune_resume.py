"""An interrupted sweep resumes: rerunning the same sweep keeps the finished work and continues the
interrupted trial from the checkpoint Tune recorded for it (its training run resumes, not restarts)."""

from __future__ import annotations

import os
import signal

import pytest
from helpers.tune_fixtures import sweep_overrides, write_sweep_shards
from ray import tune

from rayloom.config import compose
from rayloom.train import RunPaths
from rayloom.train import checkpoints as ckpts
from rayloom.tune import sweep
from rayloom.tune.sweep import sweep_dir

pytestmark = pytest.mark.integration


class StopAfterFirstCheckpoint(tune.Callback):
    """Sends the sweep Ray Tune's graceful stop signal (SIGUSR1) as soon as Tune's controller has
    registered a trial's first checkpoint. `on_trial_save` runs after the controller recorded the
    checkpoint with the trial, so the saved experiment state always holds it: the stop point does
    not depend on timing."""

    def __init__(self) -> None:
        self.saves = 0

    def on_trial_save(self, iteration, trials, trial, **info):
        self.saves += 1
        if self.saves == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    def __reduce__(self):
        # Tune pickles the run config, this callback included, into the sweep directory, and the
        # resumed sweep runs what it unpickles: that copy is a plain no-op Callback.
        return tune.Callback, ()


def test_an_interrupted_sweep_resumes(ray_local, tiny_model_dir, tmp_path):
    data = write_sweep_shards(tiny_model_dir, str(tmp_path / "data"))
    cfg = compose("tune", sweep_overrides(
        tmp_path, data, "tune=random", "tune.name=resume-test", "tune.num_samples=2", "tune.max_concurrent_trials=1",
        "~tune.space.train.warmup_steps", "tune.space.train.lr.low=0.001"))
    stopper = StopAfterFirstCheckpoint()
    first = sweep(cfg, callbacks=[stopper])
    assert stopper.saves >= 1
    assert first.interrupted and first.best_config_path is None
    reported = {t.trial_id: t.num_reports for t in first.trials}
    assert sum(reported.values()) >= 1 and any(n < 4 for n in reported.values())

    second = sweep(cfg)  # same tune.name: resumes
    assert second.resumed and not second.interrupted
    # The interrupted sweep's trials are kept; the searcher (its state restored) adds the rest.
    assert set(reported) <= {t.trial_id for t in second.trials} and len(second.trials) == 2
    assert all(t.status == "finished" and t.num_reports == 4 for t in second.trials), [t.error for t in second.trials]
    # The interrupted trial continued from its recorded checkpoint: its training run resumed.
    resumed = [t for t in second.trials if any(p["restored_from"] == "self" for p in t.curve)]
    assert resumed
    for trial in resumed:
        state = ckpts.read_state(ckpts.latest_complete(RunPaths.of(cfg, trial.run_name).run_dir)[1])
        assert state.step == 8 and state.resumes and state.resumes[0]["from_step"] >= 2
        assert [p["step"] for p in trial.curve] == [2, 4, 6, 8]
    assert second.best_config_path and second.best_checkpoint
    assert os.path.isdir(sweep_dir(cfg))
