"""Experiment tracking on the driver: MLflow and TensorBoard, fed with the metrics workers report.

Workers never talk to a tracker: their metrics arrive through ray.train.report and a Ray Train
callback, and the driver logs them here (one writer, no credentials on workers).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from rayloom import storage
from rayloom.config import RayloomConfig, TrackingConfig
from rayloom.secret_policy import redact_uri

log = logging.getLogger(__name__)


def default_mlflow_uri(storage_root: str) -> str:
    # MLflow 3 refuses plain file stores; a SQLite file is its local default. SQLite needs a local
    # path, so an S3 storage root keeps the database in the working directory.
    base = Path(storage_root) if not storage.is_s3(storage_root) else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def default_tensorboard_dir(storage_root: str, run_name: str) -> str:
    base = storage_root if not storage.is_s3(storage_root) else "."
    return str(Path(base, "tensorboard", run_name).resolve())


def _numeric(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class MlflowTracker:
    def __init__(self, tracking: TrackingConfig, storage_root: str, run_name: str, params: dict[str, str]):
        from mlflow.tracking import MlflowClient

        self.uri = tracking.mlflow_uri or default_mlflow_uri(storage_root)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(tracking.experiment)
        if experiment is None:
            artifacts = None
            if self.uri.startswith("sqlite:///"):
                artifacts = Path(self.uri.removeprefix("sqlite:///")).parent.joinpath("mlartifacts").as_uri()
            experiment_id = self.client.create_experiment(tracking.experiment, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"rayloom.run_name": run_name})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in _numeric(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class TensorBoardTracker:
    def __init__(self, tracking: TrackingConfig, storage_root: str, run_name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = tracking.tensorboard_dir or default_tensorboard_dir(storage_root, run_name)
        os.makedirs(self.log_dir, exist_ok=True)
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in _numeric(metrics).items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


def run_params(cfg: RayloomConfig) -> dict[str, str]:
    """The settings worth comparing between runs, flattened for MLflow params."""
    return {
        "model": cfg.model.name, "objective": cfg.objective.name, "peft": cfg.peft.method,
        "zero_stage": cfg.deepspeed.zero_stage, "offload_optimizer": cfg.deepspeed.offload_optimizer,
        "offload_param": cfg.deepspeed.offload_param, "precision": cfg.deepspeed.precision,
        "tensor_parallel_size": cfg.deepspeed.tensor_parallel_size, "num_workers": cfg.train.num_workers,
        "lr": cfg.train.lr, "warmup_steps": cfg.train.warmup_steps, "max_steps": cfg.train.max_steps,
        "micro_batch_size": cfg.train.micro_batch_size, "global_batch_size": cfg.train.global_batch_size,
        "seed": cfg.train.seed, "lora_r": cfg.peft.r, "lora_alpha": cfg.peft.alpha,
    }


def build_trackers(cfg: RayloomConfig, run_name: str) -> list:
    trackers: list = []
    if cfg.tracking.mlflow:
        tracker = MlflowTracker(cfg.tracking, cfg.storage.root, run_name, run_params(cfg))
        log.info("tracking to MLflow at %s (run %s)", redact_uri(tracker.uri), tracker.run_id)
        trackers.append(tracker)
    if cfg.tracking.tensorboard:
        tracker = TensorBoardTracker(cfg.tracking, cfg.storage.root, run_name)
        log.info("tracking to TensorBoard at %s", tracker.log_dir)
        trackers.append(tracker)
    return trackers
