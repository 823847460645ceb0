"""Tracking group: experiment tracking back-ends, fed by the training driver."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import non_negative, positive, require


@dataclass
class TrackingConfig:
    # MLflow tracking URI; empty -> a local SQLite store, <storage.root>/mlflow.db (./mlflow.db when
    # storage.root is on S3), artifacts beside it. (MLflow 3 refuses plain file stores.)
    mlflow: bool = False
    mlflow_uri: str = ""
    # TensorBoard event files; empty tensorboard_dir -> storage.root/tensorboard/<run_name>.
    tensorboard: bool = False
    tensorboard_dir: str = ""
    experiment: str = "rayloom"
    # Workers record metrics every log_every optimizer steps ...
    log_every: int = 1
    # ... and send the recorded steps to the driver at most every report_interval_s seconds (and at
    # every checkpoint): a report is a barrier that Ray Train's controller drains on its own poll
    # interval (2 s), so reporting every step would pace training to it.
    report_interval_s: float = 2.0
    # A tqdm progress bar on the driver (off in non-interactive logs if you prefer plain lines).
    progress_bar: bool = True

    def __post_init__(self) -> None:
        positive(self.log_every, "tracking.log_every")
        non_negative(self.report_interval_s, "tracking.report_interval_s")
        require(bool(self.experiment), "tracking.experiment", "must not be empty", self.experiment)
