"""One Tune trial: a Ray Train run of the real trainer (Train V2's pattern of launching a trainer
from a Tune trial function), with its evaluations forwarded to Tune.

The trial function applies the trial's sampled values to the typed config, starts
`rayloom.train.driver.train` in a thread, and reports each evaluation to Tune from its own thread
(where Tune expects `tune.report`). With every evaluation it hands Tune a tiny checkpoint: a
pointer (JSON) to the trainer's complete checkpoint of that step, which lives in the trial's
training run directory. Tune restores a trial from such a pointer when a sweep resumes and when
PBT exploits; either way the trial starts a new training run seeded with a copy of the pointed-to
checkpoint (its own, or a better trial's with its own perturbed hyperparameters) and continues
from that step.

Stopping a trial (ASHA, PBT) ends the trial's actor; the Ray Train controller and workers it owns
end with it, which frees their resources for the next trial.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rayloom.align  # noqa: F401  (registers the alignment objectives: dpo, ipo, orpo, safety_sft)
from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.planner import check_fits
from rayloom.train import RunPaths, train
from rayloom.train import checkpoints as ckpts
from rayloom.tune.space import apply_overrides, trial_values

log = logging.getLogger(__name__)

POINTER_FILE = "rayloom_checkpoint.json"


@dataclass
class SweepJob:
    """What every trial needs, picklable (passed with tune.with_parameters)."""

    cfg: RayloomConfig  # the base config, paths made absolute (trials run in their own working dir)
    space: dict[str, Any]  # {dotted path: spec}
    data_output: str
    sweep_name: str
    # Metric keys a report must carry to reach Tune.
    metric: str
    num_reports: int


def evaluation_interval(max_steps: int, num_reports: int) -> int:
    return max(1, max_steps // num_reports)


def trial_config(cfg: RayloomConfig, job: SweepJob, run_name: str, on_existing: str) -> RayloomConfig:
    """The sweep's own settings for a trial's training run: evaluate and checkpoint together every
    max_steps/num_reports steps, keep every checkpoint (PBT copies them, the best is kept), report
    only at checkpoints, no export and no progress bar per trial."""
    interval = evaluation_interval(cfg.train.max_steps, job.num_reports)
    train = dataclasses.replace(cfg.train, run_name=run_name, checkpoint_every=interval, eval_every=interval,
                                keep_checkpoints=job.num_reports + 2, export=False, on_existing=on_existing,
                                eval_batches=max(cfg.train.eval_batches, 1))
    tracking = dataclasses.replace(cfg.tracking, progress_bar=False, report_interval_s=1e9)
    return dataclasses.replace(cfg, train=train, tracking=tracking)


def read_pointer(tune_checkpoint) -> dict | None:
    if tune_checkpoint is None:
        return None
    with tune_checkpoint.as_directory() as local:
        path = Path(local) / POINTER_FILE
        return json.loads(path.read_text()) if path.is_file() else None


def seed_from_donor(pointer: dict, run_dir: str, cfg: RayloomConfig) -> str:
    """Copy a trial's recorded checkpoint into `run_dir` (PBT's exploit step, or a resumed
    sweep), retargeted to this trial's hyperparameters, and return the copy's URI."""
    source = storage.join(pointer["run_dir"], pointer["checkpoint"])
    if not ckpts.is_complete(source):
        raise RuntimeError(f"PBT donor checkpoint {source} is incomplete")
    with tempfile.TemporaryDirectory(prefix="rayloom-pbt-") as tmp:
        local = storage.download_dir(source, Path(tmp) / "ckpt")
        (local / storage.COMMIT_MARKER).unlink(missing_ok=True)
        retarget_hyperparameters(local, cfg)
        return storage.commit_dir(local, storage.join(run_dir, pointer["checkpoint"]))


def retarget_hyperparameters(checkpoint_dir: Path, cfg: RayloomConfig) -> None:
    """Write this trial's learning rate and weight decay into the copied DeepSpeed checkpoint.

    DeepSpeed restores the LR scheduler (its base learning rates) and the optimizer's parameter
    groups from the checkpoint, which would silently undo PBT's perturbation of train.lr /
    train.weight_decay; the schedule's shape (warm-up, cosine) comes from the trial's own config.
    Hand-written because DeepSpeed has no API to change these on load.
    """
    import torch

    from rayloom.train.safe_load import safe_torch_load

    state = ckpts.TrainerState.from_json((checkpoint_dir / ckpts.STATE_FILE).read_text())
    tag_dir = checkpoint_dir / ckpts.DS_DIR / state.ds_tag
    for path in sorted(tag_dir.glob("*.pt")):
        data = safe_torch_load(path)  # weights_only=True: no code runs from a checkpoint
        changed = False
        scheduler = data.get("lr_scheduler") if isinstance(data, dict) else None
        if isinstance(scheduler, dict) and "base_lrs" in scheduler:
            scheduler["base_lrs"] = [cfg.train.lr for _ in scheduler["base_lrs"]]
            changed = True
        for groups in _param_groups_in(data):
            for group in groups:
                if "lr" in group:
                    # The lr of the step after restore: the schedule's factor times the new base.
                    old_base = group.get("initial_lr") or group["lr"]
                    factor = group["lr"] / old_base if old_base else 1.0
                    group["lr"] = cfg.train.lr * factor
                    if "initial_lr" in group:
                        group["initial_lr"] = cfg.train.lr
                if "weight_decay" in group and group["weight_decay"] != 0.0:
                    group["weight_decay"] = cfg.train.weight_decay
                changed = True
        if changed:
            torch.save(data, path)


def _param_groups_in(data) -> list[list[dict]]:
    """Every optimizer `param_groups` list inside a DeepSpeed checkpoint file (plain and ZeRO layouts)."""
    found = []
    todo = [data]
    while todo:
        current = todo.pop()
        if isinstance(current, dict):
            groups = current.get("param_groups")
            if isinstance(groups, list) and groups and isinstance(groups[0], dict):
                found.append(groups)
            todo += [v for k, v in current.items() if k != "param_groups" and isinstance(v, dict | list)]
        elif isinstance(current, list):
            todo += [v for v in current if isinstance(v, dict)]
    return found


def _pointer_checkpoint(pointer: dict):
    from ray import tune

    tmp = tempfile.mkdtemp(prefix="rayloom-tune-ptr-")
    (Path(tmp) / POINTER_FILE).write_text(json.dumps(pointer))
    return tmp, tune.Checkpoint.from_directory(tmp)


def trial_fn(config: dict[str, Any], job: SweepJob) -> None:
    from ray import tune

    values = trial_values(config, job.space)
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_overrides(job.cfg, values)
    pointer = read_pointer(tune.get_checkpoint())
    restored: dict[str, Any] = {}
    if pointer is None:
        # Fresh trial (or one interrupted before its first evaluation): start over.
        run_name, on_existing = f"{job.sweep_name}-{trial_id}", "overwrite"
    elif pointer["trial_id"] == trial_id:
        # The sweep resumed: continue from the checkpoint Tune recorded for this trial. A new run
        # seeded with it (rather than the old run, which may hold newer checkpoints Tune never saw)
        # keeps the trainer and Tune's evaluation count in step.
        run_name, on_existing = f"{job.sweep_name}-{trial_id}-resumed-s{pointer['step']}", "resume"
        restored = {"restored_from": "self", "restored_step": pointer["step"]}
    else:
        # PBT exploit: continue from the donor's checkpoint with this trial's (perturbed) values.
        run_name, on_existing = f"{job.sweep_name}-{trial_id}-from-{pointer['trial_id']}-s{pointer['step']}", "resume"
        restored = {"restored_from": pointer["trial_id"], "restored_step": pointer["step"]}
    cfg = trial_config(cfg, job, run_name, on_existing)
    fits, why = check_fits(cfg)
    if not fits:  # the planner predicts this trial's values cannot fit: skip it instead of an OOM
        log.warning("trial %s skipped: %s", trial_id, why)
        worst = float("inf") if cfg.tune.mode == "min" else float("-inf")
        tune.report({job.metric: worst, "skipped": why, "values": json.dumps(values), "run_name": run_name})
        return
    directory = RunPaths.of(cfg, run_name).run_dir
    if restored:
        storage.remove(directory)
        seeded = seed_from_donor(pointer, directory, cfg)
        log.info("trial %s continues from %s's checkpoint at step %d: %s", trial_id, pointer["trial_id"],
                 pointer["step"], seeded)

    reports: queue.Queue = queue.Queue()

    def on_report(steps: list[dict], checkpoint: str | None) -> None:
        # Runs on the driver's monitor thread; the trial thread below talks to Tune.
        for metrics in steps:
            if job.metric in metrics:
                reports.put((metrics, checkpoint if metrics is steps[-1] else None))

    outcome: dict[str, Any] = {}

    def run_training() -> None:
        try:
            outcome["result"] = train(cfg, data_output=job.data_output, on_report=on_report)
        except BaseException as exc:  # re-raised on the trial thread, where Tune records it
            outcome["error"] = exc
        finally:
            reports.put(None)

    worker = threading.Thread(target=run_training, name=f"rayloom-trial-{trial_id}", daemon=True)
    worker.start()
    while True:
        item = reports.get()
        if item is None:
            break
        metrics, checkpoint = item
        report = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
        report.update(values=json.dumps(values), run_name=run_name, **restored)
        if checkpoint is None:
            tune.report(report)
            continue
        pointer_out = {"trial_id": trial_id, "run_name": run_name, "run_dir": directory,
                       "checkpoint": checkpoint.rstrip("/").rsplit("/", 1)[-1], "step": int(metrics["step"]),
                       "values": values}
        report["checkpoint"] = storage.join(directory, pointer_out["checkpoint"])
        tmp, tune_checkpoint = _pointer_checkpoint(pointer_out)
        try:
            tune.report(report, checkpoint=tune_checkpoint)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
