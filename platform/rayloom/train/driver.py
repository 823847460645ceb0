"""The training driver: `train()`, which later stages call, and `rayloom train` (run_train_job).

train() reads top to bottom: check the config, look up the objective, open the data, decide what
to do with an earlier run of the same name, run `train_fn` on `train.num_workers` Ray Train
workers while a driver thread shows progress and feeds the trackers, then export a standard
Hugging Face directory from the final checkpoint and record its lineage.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayloom import lineage, storage
from rayloom.config import RayloomConfig
from rayloom.data import read_manifest
from rayloom.errors import UserError
from rayloom.models import resolve_model_dir
from rayloom.runtime import apply_storage_env, ray_session
from rayloom.train import checkpoints as ckpts
from rayloom.train import elastic
from rayloom.train._data import check_data_tokenizer, open_training_data
from rayloom.train._monitor import Monitor, build_metrics_callback
from rayloom.train._workers import user_error_in, worker_runtime_env
from rayloom.train.checks import check_config
from rayloom.train.ds_config import build_batch_geometry
from rayloom.train.export import export_checkpoint
from rayloom.train.objectives import objective_builder
from rayloom.train.paths import RunPaths, prepare_run_dir, ray_storage_options
from rayloom.train.report_channel import ReportChannel
from rayloom.train.tracking import build_trackers
from rayloom.train.train_fn import TrainJob, train_fn

log = logging.getLogger(__name__)


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
    # The objective, and its own metrics to summarize (Objective.summary_metrics).
    objective: str = ""
    summary_metrics: tuple[str, ...] = ()


def train(cfg: RayloomConfig, datasets: dict | None = None, data_output: str | None = None,
          run_name: str | None = None,
          on_report: Callable[[list[dict], str | None], None] | None = None) -> TrainResult:
    """Train with `cfg` on `datasets` ({split: ray.data.Dataset}) or on the shards at `data_output`
    (default: data.output, else <storage.root>/data/<data.name>), as run `run_name` (default
    train.run_name). Needs a running Ray (see rayloom.runtime.ray_session). Returns where the
    checkpoint and exported model are.

    `on_report(steps, checkpoint_uri)`, when given, is called in this process (from the monitor
    thread) for every report rank 0 makes: its list of step metrics, oldest first, and the path of
    the checkpoint it carried as Ray Train reports it (None without one; its last component is the
    checkpoint's name under the run directory). rayloom.tune uses it to feed Ray Tune."""
    # Ray is heavy; importing rayloom.train must not import it.
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from rayloom.train.ingest import IngestConfig

    if run_name:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=run_name))
    check_config(cfg)
    name = cfg.train.run_name
    paths = RunPaths.of(cfg, data_output=data_output)
    check_export_destination(cfg, paths)
    build_objective = objective_builder(cfg.objective.name)
    objective = build_objective(cfg)
    data, seq_len, rows = open_training_data(cfg, datasets, paths.data_output, objective.columns,
                                             objective.data_kind)
    if objective.prepare_data is not None:  # e.g. safety_sft mixes its seed set into the train split
        data = objective.prepare_data(data, cfg, seq_len)  # only adds rows: `rows` stays a lower bound
    if seq_len != cfg.data.seq_len:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=seq_len))
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed)
    if rows < geometry.global_batch_size:
        raise UserError(f"the train split has {rows} rows but one optimizer step needs {geometry.global_batch_size} "
                        "(train.micro_batch_size x data-parallel workers x accumulation); lower the batch or add data")

    prepare_run_dir(cfg, paths.run_dir)
    # Tensor-parallel peers must see identical batches: every worker reads all rows and keeps its
    # data-parallel rank's share, instead of Ray Data splitting the stream between workers.
    # Elastic runs too: the data position is then a global sample offset, the same at every size.
    every_worker_reads_all_rows = cfg.deepspeed.tensor_parallel_size > 1 or cfg.train.elastic
    job = TrainJob(cfg=cfg, run_dir=paths.run_dir, build_objective=build_objective,
                   data_mode="stride" if every_worker_reads_all_rows else "split",
                   has_validation="validation" in data)
    # Through the GCS, not through an actor: no process beside the run, and nothing on a worker
    # node that preemption can take away (rayloom.train.report_channel).
    channel = ReportChannel()
    trackers = build_trackers(cfg, name)
    monitor = Monitor(channel, cfg, trackers, name, on_report)
    resources = {**cfg.train.worker_resources, "CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(**elastic.scaling_kwargs(cfg.train), use_gpu=cfg.train.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            **ray_storage_options(paths.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=elastic.max_failures(cfg.train)),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=[build_metrics_callback(channel)],
            worker_runtime_env=worker_runtime_env(cfg),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=data,
        # Ordered execution keeps the stream each worker sees reproducible, which is what the
        # data position in a checkpoint refers to. Validation is not split (each worker strides it).
        # IngestConfig: Ray's DataConfig with a leaner executor loop (rayloom.train.ingest).
        dataset_config=IngestConfig(datasets_to_split=[] if every_worker_reads_all_rows else ["train"],
                                    execution_options=ExecutionOptions(preserve_order=True)),
    )
    started = time.perf_counter()
    monitor.start()
    status = "FAILED"
    try:
        trainer.fit()
        status = "FINISHED"
    except Exception as exc:
        user_error = user_error_in(exc)
        if user_error is not None:
            raise type(user_error)(str(user_error)) from None
        raise
    finally:
        monitor.finish()
        for tracker in trackers:
            tracker.close(status)
        try:
            channel.close()
        except Exception:  # the GCS may already be gone with its Ray session
            pass
    wall = time.perf_counter() - started
    if monitor.error is not None:
        raise RuntimeError(f"the driver's metrics monitor failed: {monitor.error!r}") from monitor.error

    newest = ckpts.latest_complete(paths.run_dir)
    if newest is None:
        raise RuntimeError(f"training finished but {paths.run_dir} holds no complete checkpoint")
    step, checkpoint = newest
    state = ckpts.read_state(checkpoint)
    result = TrainResult(run_name=name, run_dir=paths.run_dir, checkpoint=checkpoint, step=step,
                         objective=objective.name, summary_metrics=objective.summary_metrics,
                         history=monitor.history, metrics=monitor.history[-1] if monitor.history else {},
                         resumes=state.resumes, num_failures=len(monitor.failures), wall_s=wall,
                         startup_s=monitor.first_report_s or 0.0)
    if cfg.peft.method != "none" and storage.exists(storage.join(checkpoint, ckpts.ADAPTER_DIR)):
        result.adapter_dir = storage.join(checkpoint, ckpts.ADAPTER_DIR)
    if cfg.train.export:
        result.model_dir = export_checkpoint(checkpoint, paths.export_dir, base_model_dir=resolve_model_dir(cfg.model),
                                             root=cfg.storage.root, overwrite=cfg.train.overwrite)
        _write_model_lineage(cfg, result, None if datasets is not None else paths.data_output)
    return result


def _write_model_lineage(cfg: RayloomConfig, result: TrainResult, data_output: str | None) -> None:
    """rayloom_lineage.json beside the export: this run, its data's hashes, its base model's record."""
    data = lineage.data_record(data_output) if data_output else {"source": "ray.data datasets passed to train()"}
    record = lineage.new_record(
        "train", run=result.run_name, parent=lineage.base_record(cfg.model), data=data,
        objective=cfg.objective.name, peft=cfg.peft.method if cfg.peft.method != "none" else None,
        steps=result.step, zero_stage=cfg.deepspeed.zero_stage, checkpoint=result.checkpoint,
        config_hash=lineage.config_hash(cfg), final_loss=result.metrics.get("loss"))
    lineage.write_lineage(result.model_dir, record)


def check_export_destination(cfg: RayloomConfig, paths: RunPaths) -> None:
    """Refuse a bad export path before training, not after it: the storage root, an input, or a
    folder rayloom did not write (unless train.overwrite)."""
    if cfg.train.export:
        storage.check_output_path(paths.export_dir, inputs=[paths.run_dir, paths.data_output],
                                  root=cfg.storage.root, what="train.export_dir")
        storage.check_writable(paths.export_dir, kind="model", overwrite=cfg.train.overwrite)


def run_train_job(cfg: RayloomConfig) -> TrainResult:
    """`rayloom train [overrides]`: train on the shards at data.output (or <storage.root>/data/<data.name>)."""
    check_config(cfg)
    apply_storage_env(cfg.storage)
    check_export_destination(cfg, RunPaths.of(cfg))
    # No shards, or shards another tokenizer made -> a clear error before Ray starts.
    data_output = RunPaths.of(cfg).data_output
    check_data_tokenizer(cfg.model, read_manifest(data_output), data_output)
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
    moved = []
    for key in result.summary_metrics:
        seen = [h for h in result.history if isinstance(h.get(key), int | float)]
        if seen:
            moved.append(f"{key} {seen[0][key]:.3g} -> {seen[-1][key]:.3g}")
    if moved:
        lines.append(f"  {result.objective}: " + ", ".join(moved))
    if result.resumes:
        lines.append("  resumed from step(s) " + ", ".join(str(r["from_step"]) for r in result.resumes))
    if result.adapter_dir:
        lines.append(f"  adapter: {result.adapter_dir}")
    if result.model_dir:
        lines.append(f"  model: {result.model_dir}")
    return "\n".join(lines)
