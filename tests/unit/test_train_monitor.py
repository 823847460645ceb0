"""The driver's metrics monitor (no Ray): it keeps reading an empty channel, hands reports to the
trackers and `on_report`, takes everything sent before `finish`, and keeps a failing read's error
for the driver instead of spinning."""

from __future__ import annotations

import threading

from rayloom.config import compose
from rayloom.train._monitor import Monitor

REPORT = {"step": 3, "loss": 1.5, "lr": 1e-3, "tokens_per_s": 10.0,
          "history": [{"step": 2, "loss": 1.6, "lr": 1e-3, "tokens_per_s": 9.0},
                      {"step": 3, "loss": 1.5, "lr": 1e-3, "tokens_per_s": 10.0}]}


class _ScriptedChannel:
    """Answers take() from a script, one entry per read: a list is returned, an exception raised;
    once the script is used up, reads return [] and `drained` is set."""

    def __init__(self, *script):
        self.script = list(script)
        self.reads = 0
        self.drained = threading.Event()

    def take(self):
        self.reads += 1
        if not self.script:
            self.drained.set()
            return []
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


class _Tracker:
    def __init__(self):
        self.logged = []

    def log(self, metrics, step):
        self.logged.append(step)


def _cfg():
    return compose("train", ["tracking.progress_bar=false"])


def test_reports_reach_trackers_and_on_report_after_empty_reads():
    tracker, reports = _Tracker(), []
    channel = _ScriptedChannel([], [("metrics", REPORT, "/runs/r/checkpoint_00000003_abc")], [])
    monitor = Monitor(channel, _cfg(), [tracker], "r",
                      on_report=lambda steps, ckpt: reports.append(([s["step"] for s in steps], ckpt)))
    monitor.start()
    assert channel.drained.wait(timeout=30)
    monitor.finish()
    assert monitor.error is None and not monitor.is_alive()
    assert [h["step"] for h in monitor.history] == [2, 3] and tracker.logged == [2, 3]
    assert reports == [([2, 3], "/runs/r/checkpoint_00000003_abc")]


def test_finish_reads_once_more_so_a_report_sent_just_before_it_is_kept():
    tracker = _Tracker()
    channel = _ScriptedChannel()
    monitor = Monitor(channel, _cfg(), [tracker], "r")
    monitor.start()
    assert channel.drained.wait(timeout=30)  # the thread has read an empty channel and waits
    channel.script.append([("metrics", REPORT, None)])  # the controller's last report
    monitor.finish()
    assert not monitor.is_alive() and monitor.error is None
    assert tracker.logged == [2, 3] and channel.script == []


def test_a_failing_read_is_kept_for_the_driver_not_swallowed():
    lost = ConnectionError("the GCS is gone")
    channel = _ScriptedChannel([], lost)
    monitor = Monitor(channel, _cfg(), [], "r")
    monitor.start()
    monitor.join(timeout=30)
    assert not monitor.is_alive() and monitor.error is lost and channel.reads == 2
    monitor.finish()
