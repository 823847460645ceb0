"""Deterministic holds for the elastic tests that drive a *submitted* run from outside it.

An in-process test triggers faults from `train(on_report=...)`; a job submitted to a cluster has no
such hook, and its test only sees storage and processes. RAYLOOM_TEST_TRAIN_FAULT holds the run
after a checkpoint until the test has acted, so the run's speed never races the test:

  hold:<workers>:<path>     after each checkpoint taken by <workers> workers
  hold-shrunk:<path>        after each checkpoint of a run that resumed at fewer workers than its
                            checkpoint was written by

several joined by ";". A hold ends when <path> exists (or after 600 s); rank 0 writes <path>.ready
(the step) when it starts. Unset (always, outside tests) it costs one environment lookup per
checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "RAYLOOM_TEST_TRAIN_FAULT"
HOLD_LIMIT_S = 600.0


def _applies(action: str, arg: str, world: int, resumes: list[dict]) -> bool:
    if action == "hold":
        return world == int(arg)
    if action == "hold-shrunk":
        return bool(resumes) and resumes[-1]["from_workers"] > world
    raise ValueError(f"{ENV}: unknown action {action!r}")


def after_checkpoint(step: int, world: int, resumes: list[dict], rank: int) -> None:
    for spec in filter(None, os.environ.get(ENV, "").split(";")):
        action, _, rest = spec.partition(":")
        arg, path = rest.split(":", 1) if action == "hold" else ("", rest)
        if not _applies(action, arg, world, resumes) or Path(path).exists():
            continue
        if rank == 0:
            Path(path + ".ready").write_text(str(step))
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
