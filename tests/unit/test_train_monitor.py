"""The driver's metrics monitor (no Ray): it waits out an empty queue, hands reports to the
trackers and `on_report`, and keeps a failing queue's error for the driver instead of spinning."""

from __future__ import annotations

import queue

from rayloom.config import compose
from rayloom.train._monitor import Monitor

REPORT = {"step": 3, "loss": 1.5, "lr": 1e-3, "tokens_per_s": 10.0,
          "history": [{"step": 2, "loss": 1.6, "lr": 1e-3, "tokens_per_s": 9.0},
                      {"step": 3, "loss": 1.5, "lr": 1e-3, "tokens_per_s": 10.0}]}


class _ScriptedQueue:
    """Answers get() from a script: an exception instance is raised, anything else returned."""

    def __init__(self, *script):
        self.script = list(script)

    def get(self, timeout):
        item = self.script.pop(0) if self.script else queue.Empty()
        if isinstance(item, BaseException):
            raise item
        return item

    def put(self, item):
        self.script.append(item)

    def empty(self):
        if self.script and isinstance(self.script[0], RuntimeError):
            raise self.script[0]
        return not self.script


class _Tracker:
    def __init__(self):
        self.logged = []

    def log(self, metrics, step):
        self.logged.append(step)


def _cfg():
    return compose("train", ["tracking.progress_bar=false"])


def test_reports_reach_trackers_and_on_report_after_empty_waits():
    tracker, reports = _Tracker(), []
    monitor = Monitor(_ScriptedQueue(queue.Empty(), ("metrics", REPORT, "/runs/r/checkpoint_00000003_abc"),
                                     queue.Empty()),
                      _cfg(), [tracker], "r", on_report=lambda steps, ckpt: reports.append(([s["step"] for s in steps], ckpt)))
    monitor.start()
    monitor.finish()
    assert monitor.error is None
    assert [h["step"] for h in monitor.history] == [2, 3] and tracker.logged == [2, 3]
    assert reports == [([2, 3], "/runs/r/checkpoint_00000003_abc")]


def test_finish_ends_the_wait_with_a_sentinel_after_every_queued_report():
    tracker = _Tracker()
    scripted = _ScriptedQueue(("metrics", REPORT, None))
    monitor = Monitor(scripted, _cfg(), [tracker], "r")
    monitor.start()
    monitor.finish()  # queues the sentinel behind the report, then joins
    assert not monitor.is_alive() and monitor.error is None
    assert tracker.logged == [2, 3] and scripted.script == []  # the sentinel was consumed, not logged


def test_a_dead_queue_is_kept_for_the_driver_not_swallowed():
    dead = RuntimeError("the queue actor died")
    monitor = Monitor(_ScriptedQueue(queue.Empty(), dead), _cfg(), [], "r")
    monitor.start()
    monitor.join(timeout=10)
    assert not monitor.is_alive() and monitor.error is dead
    monitor.finish()
