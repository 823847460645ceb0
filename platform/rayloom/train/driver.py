"""The training driver: `rayloom train` and the `train()` function later stages call.

It checks the config (before anything starts), opens the data (committed shards or ready Ray
datasets), decides what to do with an existing run of the same name, runs `train_fn` on
`train.num_workers` Ray Train workers, shows a progress bar and feeds MLflow/TensorBoard with the
metrics the workers report, and finally exports a standard Hugging Face directory from the final
checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue as queue_module
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.errors import NotBuiltError, UserError
from rayloom.train import checkpoints as ckpts

log = logging.getLogger(__name__)

# Environment variables naming credential *files* or profiles (never secret values): forwarded to
# workers so they find the same credentials the driver uses.
_CREDENTIAL_REFERENCES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE")


@dataclass
class TrainResult:
    run_name: str
    run_dir: str
    # Newest complete checkpoint (URI) and its step.
    checkpoint: str | None
    step: int
    # Exported Hugging Face directory (adapters merged), when train.export is on.
    model_dir: str | None = None
    # The peft adapter inside the final checkpoint (PEFT runs only).
    adapter_dir: str | None = None
    # Last metrics reported by rank 0, and every report of this invocation, oldest first.
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # Steps this invocation started from (one entry per start or restart after a failure).
    resumes: list[dict] = field(default_factory=list)
    num_failures: int = 0
    wall_s: float = 0.0
    # Seconds from starting the trainer to the first reported step, minus that step's own time.
    startup_s: float = 0.0


# --- config checks that span groups (each group's own values are checked while composing) ---

def check_config(cfg: RayloomConfig) -> None:
    """Fail before any worker starts, naming the key, for combinations no single group can see."""
    from rayloom.models.peft_wrap import check_peft_supported
    from rayloom.train.ds_config import build_batch_geometry
    from rayloom.train.objectives import check_objective_built

    check_objective_built(cfg.objective.name)
    build_batch_geometry(cfg.train, cfg.deepspeed)
    ds, train, peft = cfg.deepspeed, cfg.train, cfg.peft
    if ds.precision == "fp16" and not train.use_gpu:
        raise UserError("invalid config value deepspeed.precision='fp16': fp16 mixed precision needs GPUs "
                        "(train.use_gpu=true); on CPU use bf16 or fp32")
    check_peft_supported(peft, train.use_gpu)
    if peft.method == "qlora" and ds.zero_stage == 3:
        raise UserError("invalid config value deepspeed.zero_stage=3: QLoRA's 4-bit base cannot be partitioned by "
                        "ZeRO-3; use deepspeed=zero2 with peft=qlora")
    if peft.method != "none" and ds.tensor_parallel_size > 1:
        raise UserError("invalid config value deepspeed.tensor_parallel_size="
                        f"{ds.tensor_parallel_size}: AutoTP shards plain Linear layers, not peft's adapter "
                        "layers; use peft=none with AutoTP, or ZeRO for PEFT runs")
    if train.use_gpu and ds.offload_optimizer == "nvme" and not ds.nvme_path:
        raise UserError("deepspeed.nvme_path is required for nvme offload")


# --- paths ---

def storage_path(cfg: RayloomConfig) -> str:
    path = cfg.train.storage_path or storage.join(cfg.storage.root, "train")
    return path if storage.is_s3(path) else os.path.abspath(path)


def run_dir(cfg: RayloomConfig, run_name: str | None = None) -> str:
    return storage.join(storage_path(cfg), run_name or cfg.train.run_name)


def default_data_output(cfg: RayloomConfig) -> str:
    return cfg.data.output or storage.join(cfg.storage.root, "data", cfg.data.name)


def export_dir(cfg: RayloomConfig, run_name: str) -> str:
    return cfg.train.export_dir or storage.join(cfg.storage.root, "models", run_name)


# --- data ---

def open_training_data(cfg: RayloomConfig, datasets: dict | None, data_output: str | None,
                       columns: tuple[str, ...], kind: str = "lm") -> tuple[dict, int, int]:
    """({split: Dataset} with only the objective's columns, seq_len, train rows); `kind` is the
    shard kind the objective trains on ("lm" or "preference", rayloom.data.schema)."""
    if datasets is None:
        from rayloom.data.streaming import open_shards, read_manifest

        output = data_output or default_data_output(cfg)
        manifest = read_manifest(output)
        if manifest.get("kind", "lm") != kind:
            what = "preference shards (chosen/rejected pairs)" if kind == "preference" else "language-model shards"
            raise UserError(f"objective.name={cfg.objective.name!r} trains on {what} (kind {kind!r}); the "
                            f"shards at {output!r} are of kind {manifest.get('kind')!r}")
        datasets = open_shards(output)
        seq_len = int(manifest["seq_len"])
        rows = int(manifest["splits"]["train"].get("rows") or datasets["train"].count())
    else:
        if "train" not in datasets:
            raise UserError("datasets= needs a 'train' split")
        seq_len = cfg.data.seq_len
        rows = datasets["train"].count()
    missing = [c for c in columns if c not in datasets["train"].columns()]
    if missing:
        raise UserError(f"the train data lacks column(s) {', '.join(missing)} that objective "
                        f"{cfg.objective.name!r} needs (see rayloom.data.schema)")
    selected = {}
    for split, ds in datasets.items():
        if split not in ("train", "validation"):
            continue
        ds = ds.select_columns(list(columns))
        # Workers stream these; rayloom's own progress bar replaces Ray Data's per-worker bars.
        ds.context.enable_progress_bars = False
        ds.context.enable_operator_progress_bars = False
        ds.context.print_on_execution_start = False
        selected[split] = ds
    if seq_len > cfg.model.max_position_embeddings and cfg.model.preset is not None:
        raise UserError(f"the data's seq_len={seq_len} exceeds model.max_position_embeddings="
                        f"{cfg.model.max_position_embeddings}")
    return selected, seq_len, rows


# --- progress and tracking: metrics come from the controller's callback through a Ray queue ---

def _make_callback(metrics_queue):
    from ray.train import UserCallback

    class _ForwardMetrics(UserCallback):
        """Runs on the Ray Train controller: forwards rank 0's reported metrics to the driver."""

        def __init__(self, q):
            self.q = q

        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                self.q.put(("metrics", dict(metrics[0]), checkpoint.path if checkpoint else None))

        def after_exception(self, run_context, worker_exceptions):
            first = next(iter(worker_exceptions.values()), None)
            self.q.put(("failure", f"{type(first).__name__}: {str(first).splitlines()[0] if first else ''}", None))

    return _ForwardMetrics(metrics_queue)


class _Monitor(threading.Thread):
    """Driver-side consumer: progress bar, trackers, history."""

    def __init__(self, metrics_queue, cfg: RayloomConfig, trackers: list, run_name: str, on_report=None):
        super().__init__(daemon=True, name="rayloom-train-monitor")
        self.q, self.cfg, self.trackers = metrics_queue, cfg, trackers
        self.on_report = on_report
        self.history: list[dict] = []
        self.failures: list[str] = []
        self.started = time.perf_counter()
        self.first_report_s: float | None = None
        self.stop_event = threading.Event()
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.train.max_steps, desc=f"train {run_name}", unit="step",
                        disable=not cfg.tracking.progress_bar, dynamic_ncols=True)

    def run(self) -> None:
        while not (self.stop_event.is_set() and self.q.empty()):
            try:
                kind, payload, checkpoint = self.q.get(timeout=0.2)
            except (queue_module.Empty, Exception):  # ray.util.queue.Empty subclasses queue.Empty
                continue
            self.handle(kind, payload, checkpoint)

    def handle(self, kind: str, payload, checkpoint: str | None = None) -> None:
        if kind == "failure":
            self.failures.append(payload)
            self.bar.write(f"worker failure: {payload}; Ray Train restarts the workers from the newest complete "
                           f"checkpoint (train.max_failures={self.cfg.train.max_failures})")
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
        self.stop_event.set()
        self.join(timeout=30)
        self.bar.close()


# --- the run ---

def prepare_run_dir(cfg: RayloomConfig, directory: str) -> tuple[int, str] | None:
    """Apply train.on_existing; return the checkpoint a resume will start from, if any."""
    existing = ckpts.list_checkpoints(directory)
    if not existing:
        return None
    policy = cfg.train.on_existing
    if policy == "error":
        raise UserError(f"run {cfg.train.run_name!r} already has checkpoints at {directory}: pick a new "
                        "train.run_name, or set train.on_existing=resume (continue it) or overwrite (start over)")
    if policy == "overwrite":
        log.info("train.on_existing=overwrite: deleting the previous run at %s", directory)
        storage.remove(directory)
        return None
    newest = ckpts.latest_complete(directory)
    if newest is not None:
        log.info("resuming run %s from %s (step %d)", cfg.train.run_name, newest[1], newest[0])
    return newest


def _ray_storage(path: str) -> dict:
    if not storage.is_s3(path):
        return {"storage_path": path}
    fs, inner = storage.filesystem(path)
    return {"storage_path": inner, "storage_filesystem": fs}


def _worker_runtime_env(cfg: RayloomConfig) -> dict | None:
    """Non-secret settings and credential-file references for the workers, in case Ray was
    started before they were set. Inside a Ray job the job's runtime_env already carries them."""
    from rayloom.runtime import build_env_vars

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return None
    env = build_env_vars(cfg.cluster)
    env.update({name: os.environ[name] for name in _CREDENTIAL_REFERENCES if os.environ.get(name)})
    return {"env_vars": env} if env else None


def _user_error_in(exc: BaseException) -> BaseException | None:
    """A UserError / NotBuiltError raised on a worker, found inside Ray Train's failure wrappers."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError | NotBuiltError):
            return current
        todo += list(getattr(current, "worker_failures", {}).values())
        for attr in ("controller_failure", "cause", "__cause__", "__context__"):
            nested = getattr(current, attr, None)
            if isinstance(nested, BaseException):
                todo.append(nested)
    return None


def train(cfg: RayloomConfig, datasets: dict | None = None, data_output: str | None = None,
          run_name: str | None = None, on_report=None) -> TrainResult:
    """Train with `cfg` on `datasets` ({split: ray.data.Dataset}) or on the shards at `data_output`
    (default: data.output, else <storage.root>/data/<data.name>). Needs a running Ray (see
    rayloom.runtime.ray_session). Returns where the checkpoint and exported model are.

    `on_report(steps, checkpoint_uri)`, when given, is called in this process (from the monitor
    thread) for every report rank 0 makes: its list of step metrics, oldest first, and the path of
    the checkpoint it carried as Ray Train reports it (None without one; its last component is the
    checkpoint's name under the run directory). rayloom.tune uses it to feed Ray Tune."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from rayloom.train.objectives import build_objective
    from rayloom.train.tracking import build_trackers
    from rayloom.train.train_fn import TrainJob, train_fn

    if run_name:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=run_name))
    check_config(cfg)
    name = cfg.train.run_name
    objective = build_objective(cfg)
    data, seq_len, rows = open_training_data(cfg, datasets, data_output, objective.columns, objective.data_kind)
    if objective.prepare_data is not None:  # e.g. safety_sft mixes its seed set into the train split
        data = objective.prepare_data(data, cfg, seq_len)  # only adds rows: `rows` stays a lower bound
    if seq_len != cfg.data.seq_len:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=seq_len))
    from rayloom.train.ds_config import build_batch_geometry

    geometry = build_batch_geometry(cfg.train, cfg.deepspeed)
    if rows < geometry.global_batch_size:
        raise UserError(f"the train split has {rows} rows but one optimizer step needs {geometry.global_batch_size} "
                        "(train.micro_batch_size x data-parallel workers x accumulation); lower the batch or add data")

    directory = run_dir(cfg, name)
    prepare_run_dir(cfg, directory)
    stride = cfg.deepspeed.tensor_parallel_size > 1
    job = TrainJob(cfg=cfg, run_dir=directory, data_mode="stride" if stride else "split",
                   has_validation="validation" in data)
    # No CPU: inside a Ray Tune trial this actor lands in the trial's placement group, whose
    # bundle has no whole CPU to spare for an actor's default creation request.
    metrics_queue = Queue(actor_options={"num_cpus": 0})
    trackers = build_trackers(cfg, name)
    monitor = _Monitor(metrics_queue, cfg, trackers, name, on_report)
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            **_ray_storage(storage_path(cfg)),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=[_make_callback(metrics_queue)],
            worker_runtime_env=_worker_runtime_env(cfg),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=data,
        # Ordered execution keeps the stream each worker sees reproducible, which is what the
        # data position in a checkpoint refers to. Validation is not split (each worker strides it).
        dataset_config=ray.train.DataConfig(datasets_to_split=[] if stride else ["train"],
                                            execution_options=ExecutionOptions(preserve_order=True)),
    )
    started = time.perf_counter()
    monitor.start()
    status = "FAILED"
    try:
        trainer.fit()
        status = "FINISHED"
    except Exception as exc:
        user_error = _user_error_in(exc)
        if user_error is not None:
            raise type(user_error)(str(user_error)) from None
        raise
    finally:
        monitor.finish()
        for tracker in trackers:
            tracker.close(status)
        try:
            ray.kill(metrics_queue.actor)
        except Exception:  # the queue actor may already be gone with its Ray session
            pass
    wall = time.perf_counter() - started

    newest = ckpts.latest_complete(directory)
    if newest is None:
        raise RuntimeError(f"training finished but {directory} holds no complete checkpoint")
    step, checkpoint = newest
    state = ckpts.read_state(checkpoint)
    result = TrainResult(run_name=name, run_dir=directory, checkpoint=checkpoint, step=step,
                         history=monitor.history, metrics=monitor.history[-1] if monitor.history else {},
                         resumes=state.resumes, num_failures=len(monitor.failures), wall_s=wall,
                         startup_s=monitor.first_report_s or 0.0)
    if cfg.peft.method != "none" and storage.exists(storage.join(checkpoint, ckpts.ADAPTER_DIR)):
        result.adapter_dir = storage.join(checkpoint, ckpts.ADAPTER_DIR)
    if cfg.train.export:
        from rayloom.models import resolve_model_dir
        from rayloom.train.export import export_checkpoint

        result.model_dir = export_checkpoint(checkpoint, export_dir(cfg, name), base_model_dir=resolve_model_dir(cfg.model))
        write_model_lineage(cfg, result, None if datasets is not None else (data_output or default_data_output(cfg)))
    return result


def write_model_lineage(cfg: RayloomConfig, result: TrainResult, data_output: str | None) -> None:
    """rayloom_lineage.json beside the export: this run, its data's hashes, its base model's record."""
    from rayloom import lineage

    data = lineage.data_record(data_output) if data_output else {"source": "ray.data datasets passed to train()"}
    record = lineage.new_record(
        "train", run=result.run_name, parent=lineage.base_record(cfg.model), data=data,
        objective=cfg.objective.name, peft=cfg.peft.method if cfg.peft.method != "none" else None,
        steps=result.step, zero_stage=cfg.deepspeed.zero_stage, checkpoint=result.checkpoint,
        config_hash=lineage.config_hash(cfg), final_loss=result.metrics.get("loss"))
    lineage.write_lineage(result.model_dir, record)


def run_train_job(cfg: RayloomConfig) -> TrainResult:
    """`rayloom train [overrides]`: train on the shards at data.output (or <storage.root>/data/<data.name>)."""
    from rayloom.data.streaming import read_manifest
    from rayloom.runtime import apply_storage_env, ray_session

    check_config(cfg)
    apply_storage_env(cfg.storage)
    read_manifest(default_data_output(cfg))  # no shards -> a clear error before Ray starts
    with ray_session(cfg.cluster, cfg.storage):
        result = train(cfg)
    print(summarize(result))
    return result


def summarize(result: TrainResult) -> str:
    lines = [f"run {result.run_name}: step {result.step}, checkpoint {result.checkpoint}"]
    if result.history:
        first, last = result.history[0], result.history[-1]
        lines.append(f"  loss {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']}); "
                     f"{last['tokens_per_s']:.0f} tokens/s, MFU {100 * last['mfu']:.1f}%")
    if result.resumes:
        lines.append("  resumed from step(s) " + ", ".join(str(r["from_step"]) for r in result.resumes))
    if result.adapter_dir:
        lines.append(f"  adapter: {result.adapter_dir}")
    if result.model_dir:
        lines.append(f"  model: {result.model_dir}")
    return "\n".join(lines)

