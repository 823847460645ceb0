"""Tracking group: experiment tracking back-ends."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import positive


@dataclass
class TrackingConfig:
    # MLflow tracking URI; empty -> a local file store under storage.root/mlruns.
    mlflow: bool = False
    mlflow_uri: str = ""
    tensorboard: bool = False
    experiment: str = "rayloom"
    log_every: int = 1

    def __post_init__(self) -> None:
        positive(self.log_every, "tracking.log_every")
