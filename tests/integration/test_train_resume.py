"""Failure and resume: a worker process killed mid-run is restarted by Ray Train from the newest
complete checkpoint (losing at most one checkpoint interval), an incomplete checkpoint is never
loaded, and a rerun with the same run name continues from where the run stopped."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from helpers.train_fixtures import find_train_workers, pretrain_rows, train_overrides

from rayloom.config import compose
from rayloom.train import checkpoints as ckpts

pytestmark = pytest.mark.integration

EVERY = 5
ROWS = 48


@pytest.fixture(scope="module")
def rows(tiny_model_dir):
    return pretrain_rows(tiny_model_dir, seq_len=64, max_rows=ROWS)


def _cfg(root, *extra):
    return compose("train", train_overrides(root, "train.run_name=resume-me", f"train.checkpoint_every={EVERY}",
                                            "train.max_failures=1", "train.export=false",
                                            *extra))


def _kill_a_worker_after_a_checkpoint(run_dir: str, killed: dict) -> None:
    """Wait for a complete checkpoint (step >= EVERY), then SIGKILL one training worker process."""
    deadline = time.time() + 300
    while time.time() < deadline:
        complete = [step for step, uri in ckpts.list_checkpoints(run_dir) if ckpts.is_complete(uri)]
        newest = (max(complete),) if complete else None
        if newest and newest[0] >= EVERY:
            workers = find_train_workers()
            if workers:
                victim = workers[-1]
                killed.update(step=newest[0], pid=victim.pid)
                os.kill(victim.pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def test_killed_worker_resumes_and_incomplete_checkpoint_is_never_loaded(ray_local, rows, tmp_path):
    from rayloom.train.driver import run_dir, train

    cfg = _cfg(tmp_path, "train.max_steps=30")
    directory = run_dir(cfg)
    killed: dict = {}
    killer = threading.Thread(target=_kill_a_worker_after_a_checkpoint, args=(directory, killed), daemon=True)
    killer.start()
    result = train(cfg, datasets={"train": ray_local.data.from_items(rows)})
    killer.join(timeout=5)

    # Ray Train restarted the workers once, from a complete checkpoint at or after the one that
    # existed when the worker died; at most one checkpoint interval of steps was repeated.
    assert killed, "the run finished before a worker could be killed"
    assert result.num_failures == 1
    assert len(result.resumes) == 1 and result.resumes[0]["from_step"] >= killed["step"]
    # (A report in flight when the worker died may be lost; the steps after the restart are all there.)
    steps = [h["step"] for h in result.history]
    resumed_from = result.resumes[0]["from_step"]
    assert set(range(resumed_from + 1, 31)) <= set(steps) and steps[-1] == 30 and result.step == 30
    repeated = len(steps) - len(set(steps))  # steps trained a second time after the restart
    assert repeated <= EVERY

    # The data position survived the restart: every worker consumed step * micro rows overall.
    state = ckpts.read_state(result.checkpoint)
    rows_per_epoch = (ROWS // 2) // 2 * 2  # rows per worker per epoch, whole micro-batches
    assert state.epoch * rows_per_epoch + state.rows_in_epoch == 30 * 2

    # A crash between upload and marker leaves the newest checkpoint incomplete: the rerun of the
    # same run name must skip it and continue from the one before.
    final_step, final_uri = ckpts.latest_complete(directory)
    os.remove(os.path.join(final_uri, ckpts.MARKER))
    previous_step = ckpts.latest_complete(directory)[0]
    assert previous_step == final_step - EVERY
    again = train(_cfg(tmp_path, "train.max_steps=32"), datasets={"train": ray_local.data.from_items(rows)})
    assert again.resumes[-1]["from_step"] == previous_step
    assert [h["step"] for h in again.history][0] == previous_step + 1
    assert again.step == 32 and ckpts.is_complete(again.checkpoint)

