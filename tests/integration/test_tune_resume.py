"""An interrupted sweep resumes: rerunning the same sweep keeps the finished work and continues the
interrupted trial from the checkpoint Tune recorded for it (its training run resumes, not restarts)."""

from __future__ import annotations

import glob
import os
import signal
import threading
import time

import pytest
from helpers.tune_fixtures import sweep_overrides, write_sweep_shards

from rayloom.config import compose
from rayloom.train import checkpoints as ckpts

pytestmark = pytest.mark.integration


def _interrupt_after_first_report(sweep_dir: str, fired: dict) -> None:
    """Send the sweep process SIGUSR1 (Ray Tune's graceful stop) once Tune has recorded a trial's
    first checkpoint; Tune saves the experiment state and returns.

    A trial's `checkpoint_000000` folder is written by the trial before Tune's controller registers
    it (the controller first takes the result, then runs a separate save step), so stopping as soon
    as it appears sometimes saved a state without the checkpoint and the trial restarted from
    scratch. `checkpoint_000001` can only appear after that save was processed: the trial's
    `tune.report` blocks until the controller asks for the next result, which it does only once the
    save is done."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if glob.glob(os.path.join(sweep_dir, "*", "checkpoint_000001")):
            fired["at"] = time.time()
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        time.sleep(0.2)


def test_an_interrupted_sweep_resumes(ray_local, tiny_model_dir, tmp_path):
    from rayloom.train.driver import run_dir
    from rayloom.tune.sweep import sweep, sweep_dir

    data = write_sweep_shards(tiny_model_dir, str(tmp_path / "data"))
    cfg = compose("tune", sweep_overrides(
        tmp_path, data, "tune=random", "tune.name=resume-test", "tune.num_samples=2", "tune.max_concurrent_trials=1",
        "~tune.space.train.warmup_steps", "tune.space.train.lr.low=0.001"))
    fired: dict = {}
    watcher = threading.Thread(target=_interrupt_after_first_report, args=(sweep_dir(cfg), fired), daemon=True)
    watcher.start()
    first = sweep(cfg)
    watcher.join(timeout=5)
    assert fired, "the sweep finished before it could be interrupted"
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
        state = ckpts.read_state(ckpts.latest_complete(run_dir(cfg, trial.run_name))[1])
        assert state.step == 8 and state.resumes and state.resumes[0]["from_step"] >= 2
        assert [p["step"] for p in trial.curve] == [2, 4, 6, 8]
    assert second.best_config_path and second.best_checkpoint
