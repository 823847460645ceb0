"""Tracking group: experiment tracking back-ends, fed by the training driver."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import positive, require


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
    # Workers report metrics every log_every optimizer steps (each report is a barrier).
    log_every: int = 1
    # A tqdm progress bar on the driver (off in non-interactive logs if you prefer plain lines).
    progress_bar: bool = True

    def __post_init__(self) -> None:
        positive(self.log_every, "tracking.log_every")
        require(bool(self.experiment), "tracking.experiment", "must not be empty", self.experiment)
