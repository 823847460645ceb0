"""Progress and tracking on the driver: metrics come from the Ray Train controller's callback
through a ReportChannel (rayloom.train.report_channel) to a driver thread that drives the progress
bar, the trackers and `on_report`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rayloom.config import RayloomConfig
from rayloom.progress import progress_stream
from rayloom.train.elastic import max_failures

log = logging.getLogger(__name__)

# How often the thread reads the channel. A read is one call from the driver to the GCS (no Ray
# worker process takes part), cheap enough at this rate (rayloom.train.report_channel has the
# numbers), and `on_report` - which tests use to inject faults at a known report - then runs at
# most this long after the controller got the report.
_POLL_S = 0.2


def build_metrics_callback(channel):
    """A Ray Train callback that forwards rank 0's reports (and worker failures) into `channel`."""
    # ray is heavy; importing rayloom.train must not import it.
    from ray.train import UserCallback

    class _ForwardMetrics(UserCallback):
        """Runs on the Ray Train controller: forwards rank 0's reported metrics to the driver."""

        def __init__(self, channel):
            self.channel = channel

        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                self.channel.put(("metrics", dict(metrics[0]), checkpoint.path if checkpoint else None))

        def after_exception(self, run_context, worker_exceptions):
            first = next(iter(worker_exceptions.values()), None)
            self.channel.put(("failure", f"{type(first).__name__}: {str(first).splitlines()[0] if first else ''}",
                              None))

    return _ForwardMetrics(channel)


class Monitor(threading.Thread):
    """Driver-side reader of the report channel: progress bar, trackers, history, `on_report`.

    If reading fails (the GCS is gone, `on_report` raised), the thread stops and keeps the error in
    `error` for the driver to raise once training has ended."""

    def __init__(self, channel, cfg: RayloomConfig, trackers: list, run_name: str,
                 on_report: Callable[[list[dict], str | None], None] | None = None):
        super().__init__(daemon=True, name="rayloom-train-monitor")
        # tqdm is only needed once a run starts.
        from tqdm.auto import tqdm

        self.channel, self.cfg, self.trackers = channel, cfg, trackers
        self.on_report = on_report
        self.history: list[dict] = []
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self.first_report_s: float | None = None
        self.stop_event = threading.Event()
        self.bar = tqdm(total=cfg.train.max_steps, desc=f"train {run_name}", unit="step", file=progress_stream(),
                        disable=not cfg.tracking.progress_bar, dynamic_ncols=True)

    def run(self) -> None:
        try:
            while True:
                # Read once more after `finish`: what was sent before it is then all in the channel.
                ending = self.stop_event.is_set()
                for kind, payload, checkpoint in self.channel.take():
                    self.handle(kind, payload, checkpoint)
                if ending:
                    break
                self.stop_event.wait(_POLL_S)
        except Exception as exc:  # a lost GCS, a failing on_report: the driver raises it after the run
            self.error = exc

    def handle(self, kind: str, payload, checkpoint: str | None = None) -> None:
        if kind == "failure":
            self.failures.append(payload)
            self.bar.write(f"worker failure: {payload}; Ray Train restarts the workers from the newest complete "
                           f"checkpoint ({_failures_allowed(self.cfg)})")
            return
        steps = payload.get("history") or [payload]
        if self.first_report_s is None:
            trained = sum(float(m.get("step_time_s", 0.0)) for m in steps)
            self.first_report_s = max(0.0, time.perf_counter() - self.started - trained)
        for metrics in steps:
            metrics = {k: v for k, v in metrics.items() if k != "history"}
            self.history.append(metrics)
            step = int(metrics["step"])
            for tracker in self.trackers:
                try:
                    tracker.log(metrics, step)
                except Exception as exc:  # a tracker outage must not stop training
                    log.warning("tracker %s failed to log: %s", type(tracker).__name__, exc)
        if self.on_report is not None:
            # rayloom.tune forwards each report (its steps, and the checkpoint it carried) to Ray Tune.
            self.on_report(self.history[-len(steps):], checkpoint)
        metrics = self.history[-1]
        self.bar.n = int(metrics["step"])
        postfix = {"loss": f"{metrics['loss']:.4f}", "lr": f"{metrics['lr']:.2e}",
                   "tok/s": f"{metrics['tokens_per_s']:.0f}"}
        if "val_loss" in metrics:
            postfix["val"] = f"{metrics['val_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=True)

    def finish(self) -> None:
        # trainer.fit() has returned, so the controller's reports are all in the channel (its puts
        # are synchronous): the thread's last read takes them.
        self.stop_event.set()
        self.join(timeout=30)
        self.bar.close()


def _failures_allowed(cfg: RayloomConfig) -> str:
    allowed = max_failures(cfg.train)
    if allowed == cfg.train.max_failures:
        return f"train.max_failures={allowed}"
    return f"up to {allowed} restarts: train.max_failures=0 on an elastic run"
