"""Failure and resume: a worker process killed mid-run is restarted by Ray Train from the newest
complete checkpoint (losing at most one checkpoint interval), an incomplete checkpoint is never
loaded, and a rerun with the same run name continues from where the run stopped.

The failure is injected at a fixed point of the run, not by a thread racing it: from
`train(on_report=...)`, when the report of the second checkpoint reaches the driver."""

from __future__ import annotations

import os
import signal

import pytest
from helpers.train_fixtures import find_train_workers, pretrain_rows, train_overrides

from rayloom.config import compose
from rayloom.train import RunPaths, train
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


def test_killed_worker_resumes_and_incomplete_checkpoint_is_never_loaded(ray_local, rows, tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=30")
    directory = RunPaths.of(cfg).run_dir
    killed: dict = {}

    def kill_a_worker_at_the_second_checkpoint(steps: list[dict], checkpoint: str | None) -> None:
        if killed or checkpoint is None or steps[-1]["step"] < 2 * EVERY:
            return
        victim = find_train_workers()[-1]
        killed.update(step=steps[-1]["step"], pid=victim.pid)
        os.kill(victim.pid, signal.SIGKILL)

    result = train(cfg, datasets={"train": ray_local.data.from_items(rows)},
                   on_report=kill_a_worker_at_the_second_checkpoint)

    assert killed["step"] == 2 * EVERY
    # Ray Train restarted the workers once, from the newest complete checkpoint. Which one that is
    # depends on how far the workers had got when the driver saw the report (they run ahead of it),
    # but the first is complete by then: the second's report comes after its marker barrier.
    assert result.num_failures == 1
    assert len(result.resumes) == 1
    resumed_from = result.resumes[0]["from_step"]
    assert resumed_from >= EVERY and resumed_from % EVERY == 0
    # (A report in flight when the worker died may be lost; the steps after the restart are all there.)
    steps = [h["step"] for h in result.history]
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

