"""Where a training run reads and writes, decided once per run, and what happens to an earlier
run of the same name (`train.on_existing`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.data import default_output
from rayloom.errors import UserError
from rayloom.train import checkpoints as ckpts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """The locations of one training run (local paths are absolute; s3:// URIs as given)."""

    # Ray Train's storage path: train.storage_path, else <storage.root>/train.
    storage_path: str
    # <storage_path>/<run_name>: Ray Train's experiment directory, which holds the checkpoints.
    run_dir: str
    # The committed shards to train on: data.output, else <storage.root>/data/<data.name>.
    data_output: str
    # Where the final model is exported: train.export_dir, else <storage.root>/models/<run_name>.
    export_dir: str

    @classmethod
    def of(cls, cfg: RayloomConfig, run_name: str | None = None, data_output: str | None = None) -> RunPaths:
        """The paths of run `run_name` (default train.run_name), reading shards from `data_output`
        (default: the data job's output for cfg.data)."""
        name = run_name or cfg.train.run_name
        path = cfg.train.storage_path or storage.join(cfg.storage.root, "train")
        path = path if storage.is_s3(path) else os.path.abspath(path)
        return cls(storage_path=path, run_dir=storage.join(path, name),
                   data_output=data_output or default_output(cfg),
                   export_dir=cfg.train.export_dir or storage.join(cfg.storage.root, "models", name))


def ray_storage_options(uri: str) -> dict:
    """`storage_path` (and `storage_filesystem` for s3://) for a Ray Train / Tune RunConfig."""
    if not storage.is_s3(uri):
        return {"storage_path": uri}
    fs, inner = storage.filesystem(uri)
    return {"storage_path": inner, "storage_filesystem": fs}


def prepare_run_dir(cfg: RayloomConfig, run_dir: str) -> tuple[int, str] | None:
    """Apply train.on_existing to an earlier run in `run_dir`; return the checkpoint a resume
    will start from, if any."""
    existing = ckpts.list_checkpoints(run_dir)
    if not existing:
        return None
    policy = cfg.train.on_existing
    if policy == "error":
        raise UserError(f"run {cfg.train.run_name!r} already has checkpoints at {run_dir}: pick a new "
                        "train.run_name, or set train.on_existing=resume (continue it) or overwrite (start over)")
    if policy == "overwrite":
        log.info("train.on_existing=overwrite: deleting the previous run at %s", run_dir)
        storage.remove(run_dir)
        return None
    newest = ckpts.latest_complete(run_dir)
    if newest is not None:
        log.info("resuming run %s from %s (step %d)", cfg.train.run_name, newest[1], newest[0])
    return newest
