"""The one per-worker training loop that Ray Train's TorchTrainer runs on every worker.

Read top to bottom: set up (threads, seed, model, PEFT, DeepSpeed engine), resume from the newest
complete checkpoint, then step: fetch this step's micro-batches, count the step's targets over
all ranks, forward/backward each micro-batch through DeepSpeed, report metrics, checkpoint every
`train.checkpoint_every` steps and at the end. Metrics leave the worker only via ray.train.report.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.log_setup import configure_logging
from rayloom.models import load_model, resolve_model_dir
from rayloom.models.peft_wrap import count_parameters, load_quantized_base, wrap_with_peft
from rayloom.train import _fault, universal
from rayloom.train import checkpoints as ckpts
from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config
from rayloom.train.elastic import PreemptionWatch, global_offset, rows_to_skip
from rayloom.train.metrics import ThroughputWindow, flops_per_token, measure_peak_flops, memory_gib
from rayloom.train.objectives import Objective
from rayloom.train.optim import build_lr_scheduler, param_groups

log = logging.getLogger(__name__)

# The torch.distributed deprecation warnings DeepSpeed's ZeRO raises at every step (see
# _configure_worker_logging).
DEEPSPEED_DEPRECATED_COLLECTIVES = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"


@dataclass
class TrainJob:
    """Everything a worker needs, picklable: the typed config plus what the driver resolved."""

    cfg: RayloomConfig
    # Storage URI of this run's directory (checkpoints live under it).
    run_dir: str
    # cfg -> Objective, looked up by the driver in the rayloom.train.objectives registry: a
    # module-level function, so it pickles by reference and the worker imports its module.
    build_objective: Callable[[RayloomConfig], Objective]
    # "split": each worker reads its own streaming split of the train data (Ray Data's default);
    # "stride": every worker reads all rows and keeps those of its data-parallel rank, so the
    # ranks of one tensor-parallel group see identical batches.
    data_mode: str = "split"
    has_validation: bool = False


def train_fn(config: dict) -> None:
    fn_started = time.perf_counter()
    # Heavy imports happen here, on the worker: the driver imports this module only to pickle train_fn.
    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from deepspeed.runtime.utils import clip_grad_norm_

    startup_s = {"imports": time.perf_counter() - fn_started}
    job: TrainJob = config["job"]
    cfg = job.cfg
    train = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _configure_worker_logging(rank)
    torch.set_num_threads(train.cpus_per_worker)
    device = torch.device(f"cuda:{ctx.get_local_rank()}") if train.use_gpu else torch.device("cpu")
    if train.use_gpu:
        torch.cuda.set_device(device)
    # Same seed on every rank: ZeRO-3 and AutoTP partition each rank's own copy of freshly
    # initialised (LoRA) weights, so the copies must be identical.
    _seed_everything(train.seed)

    # --- which checkpoint to resume from (rank 0 decides, and converts it once to a universal
    # checkpoint when it was written at another world size; everyone follows) ---
    choice = [_choose_resume(job, world, ray.train.get_checkpoint()) if rank == 0 else None]
    dist.broadcast_object_list(choice, src=0)
    resume_uri, universal, convert_s = choice[0] or (None, None, 0.0)
    startup_s["choose_resume"] = time.perf_counter() - fn_started

    # --- model, objective, DeepSpeed engine ---
    geometry = build_batch_geometry(train, cfg.deepspeed, world)
    ds_config = build_deepspeed_config(train, cfg.deepspeed, geometry)
    if universal is not None:  # only on the attempt that loads the universal form
        ds_config["checkpoint"] = {"load_universal": True}
    model_dir = resolve_model_dir(cfg.model)
    model = _build_model(cfg, model_dir, device)
    startup_s["model"] = time.perf_counter() - fn_started
    objective = job.build_objective(cfg)
    num_params, num_trainable = count_parameters(model)
    embed = model.get_input_embeddings().weight
    num_embedding = getattr(embed, "ds_numel", None) or embed.numel()
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, train.weight_decay),
        config=ds_config,
        lr_scheduler=lambda optimizer: build_lr_scheduler(optimizer, train),
    )
    if objective.attach is not None:  # e.g. the frozen reference policy of DPO
        objective.attach(engine, ds_config)
    startup_s["deepspeed"] = time.perf_counter() - fn_started
    # Parameters this rank holds after ZeRO-3 partitioning / AutoTP sharding (the full count otherwise).
    params_local = sum((p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel())
                       for p in engine.module.parameters())
    tp = geometry.tensor_parallel_size
    dp_rank = rank // tp  # DeepSpeed's AutoTP mesh puts each tensor-parallel group on consecutive ranks

    # --- resume ---
    state = ckpts.TrainerState(world_size=world, zero_stage=cfg.deepspeed.zero_stage, tensor_parallel_size=tp,
                               precision=cfg.deepspeed.precision, peft_method=cfg.peft.method,
                               model_dtype=cfg.model.dtype, objective=cfg.objective.name,
                               base_model=str(model_dir), data_mode=job.data_mode)
    skip_rows = 0
    if resume_uri is not None:
        saved = ckpts.resume(engine, resume_uri, state, rank, world, uses_peft=cfg.peft.method != "none",
                             universal=universal)
        skip_rows = rows_to_skip(saved, job.data_mode, geometry.data_parallel_size)
        if saved.resumes:
            saved.resumes[-1]["convert_s"] = round(convert_s, 3)
        # The run continues at this size, in this attempt's data mode, from the global offset.
        saved.world_size, saved.rows_in_epoch = world, global_offset(saved) if job.data_mode == "stride" else skip_rows
        saved.data_mode = job.data_mode
        state = saved
    # One token per attempt, shared by all ranks, so checkpoint names never collide with an earlier attempt's.
    token = [uuid.uuid4().hex[:6] if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    token = token[0]
    startup_s["resume"] = time.perf_counter() - fn_started

    # --- what throughput is measured against ---
    precision_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[cfg.deepspeed.precision]
    peak = train.peak_flops or measure_peak_flops(precision_dtype, device.type)
    seq_len = cfg.data.seq_len
    arch = engine.module.config  # the loaded model's own shape (model.* only describes presets)
    model_flops_per_token = flops_per_token(num_params, num_trainable, num_embedding, arch.num_hidden_layers,
                                            arch.hidden_size, seq_len)
    startup_s["peak_probe"] = time.perf_counter() - fn_started
    if rank == 0:
        log.info("worker start-up (s since train_fn began): %s",
                 ", ".join(f"{k} {v:.1f}" for k, v in startup_s.items()))
        log.info("training %s: %.2fM params (%.2fM trainable), %d workers (dp %d x tp %d), micro %d x accum %d "
                 "= global batch %d, ZeRO-%d, %s", cfg.model.name, num_params / 1e6, num_trainable / 1e6, world,
                 geometry.data_parallel_size, tp, geometry.micro_batch_size, geometry.grad_accum,
                 geometry.global_batch_size, cfg.deepspeed.zero_stage, cfg.deepspeed.precision)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation") if job.has_validation and train.eval_batches else None
    # "stride" mode: every worker reads the whole stream and keeps every micro_batch_stride-th micro-batch.
    strided = job.data_mode == "stride"
    micro_batch_stride = geometry.data_parallel_size if strided else 1
    micro_batch_offset = dp_rank if strided else 0
    steps = _iter_steps(train_shard, objective.columns, geometry, state.epoch, skip_rows, micro_batch_stride,
                        micro_batch_offset, train.prefetch_batches)

    # --- the loop ---
    # ray.train.report is a barrier whose queue the Ray Train controller drains on its own poll
    # interval, so reporting every step would pace training to that interval. Workers record
    # every tracking.log_every-th step and report the recorded steps together, at most every
    # tracking.report_interval_s seconds (rank 0's clock, shared through the per-step all-reduce),
    # and always at checkpoints.
    val_batches = None
    # Without ZeRO, DeepSpeed clips with the gradient norm but does not keep it: measure it ourselves.
    measure_grad_norm = cfg.deepspeed.zero_stage == 0
    recorded: list[dict] = []
    report_flag, last_report = 0.0, time.perf_counter()
    engine.train()
    window = ThroughputWindow()
    preemption = PreemptionWatch(train.preemption_check_every, train.preemption_check_interval_s, rank)
    check_flag = preemption.due(state.step + 1)
    last_save_s = 0.0
    while state.step < train.max_steps:
        fetch_start = time.perf_counter()
        epoch, rows_in_epoch, micro_batches = next(steps)
        micro_batches = [{k: v.to(device, non_blocking=True) for k, v in mb.items()} for mb in micro_batches]
        data_wait_s = time.perf_counter() - fetch_start
        # Targets of the whole optimizer step, over every rank: each micro-batch's summed loss is
        # scaled so the update equals the token mean of the global batch (DeepSpeed averages
        # gradients over data-parallel ranks and accumulation steps; the scale undoes that).
        local = torch.tensor([sum(float(objective.count_targets(mb)) for mb in micro_batches),
                              sum(float(objective.count_tokens(mb)) for mb in micro_batches),
                              report_flag, check_flag], dtype=torch.float64)
        dist.all_reduce(local)
        global_targets, global_tokens = (local[:2] / tp).tolist()
        report_due, check_due = bool(local[2] > 0), bool(local[3] > 0)
        scale = geometry.data_parallel_size * geometry.grad_accum / max(global_targets, 1.0)
        lr = scheduler.get_last_lr()[0]
        loss_sum = torch.zeros((), dtype=torch.float64)
        measured_grad_norm = None
        for index, mb in enumerate(micro_batches):
            loss = objective.loss_sum(engine, mb)
            loss_sum += loss.detach().double().cpu()
            engine.backward(loss * scale)
            if measure_grad_norm and index == len(micro_batches) - 1:
                # Measured the way DeepSpeed clips (gradients are already averaged here), with no
                # clipping of its own (max_norm=inf).
                measured_grad_norm = float(clip_grad_norm_(engine.module.parameters(), float("inf"), mpu=engine.mpu))
            engine.step()
        dist.all_reduce(loss_sum)
        grad_norm = engine.get_global_grad_norm()
        grad_norm = measured_grad_norm if grad_norm is None else grad_norm
        state.step += 1
        state.epoch, state.rows_in_epoch = epoch, rows_in_epoch
        state.tokens_seen += int(global_tokens)
        state.samples_seen += geometry.global_batch_size
        window.add_step(global_tokens, geometry.global_batch_size * seq_len, data_wait_s)

        last = state.step >= train.max_steps
        # A drain notice (spot reclaim, `ray drain-node`): checkpoint at this step boundary.
        notice = preemption.poll(state.step) if check_due and not last else None
        checkpoint_now = last or state.step % train.checkpoint_every == 0 or notice is not None
        eval_now = val_shard is not None and (last or state.step % train.eval_every == 0)
        if checkpoint_now or eval_now or state.step % cfg.tracking.log_every == 0:
            metrics = {
                "step": state.step, "epoch": state.epoch,
                "loss": float(loss_sum.item() / tp / max(global_targets, 1.0)),
                "lr": float(lr),
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                **window.metrics(model_flops_per_token, world, peak),
                "peak_flops_per_worker": peak,
                "memory_gib": memory_gib(device.type),
                "checkpoint_save_s": last_save_s,  # the previous checkpoint's save + upload
                "tokens_seen": state.tokens_seen, "samples_seen": state.samples_seen,
                "global_batch_size": geometry.global_batch_size, "num_workers": world,
                "num_params": num_params, "num_trainable": num_trainable, "params_local": params_local,
            }
            if notice is not None:
                metrics["preemption_checkpoint"] = 1
            if eval_now:
                if val_batches is None:
                    val_batches = _validation_batches(val_shard, geometry.micro_batch_size,
                                                      geometry.data_parallel_size, dp_rank, train.eval_batches)
                metrics["val_loss"] = _evaluate(engine, val_batches, objective, tp, device)
            if objective.report_metrics is not None:  # a collective: every rank reaches this line
                metrics.update(objective.report_metrics())
            recorded.append(metrics)
            window.reset()
        if checkpoint_now or (report_due and recorded):
            report_started = time.perf_counter()
            payload = {**recorded[-1], "history": recorded}
            if checkpoint_now:
                state.final = last
                ckpts.save_and_report(engine, state, payload, cfg, model_dir, token, rank)
                _fault.after_checkpoint(state.step, world, state.resumes, rank)
            else:
                ray.train.report(payload)
            recorded, last_report = [], time.perf_counter()
            if checkpoint_now:
                last_save_s = last_report - report_started
            if notice is not None:
                # Steps taken now would be lost when the node leaves: wait for it to go (Ray Train
                # then restarts the run from this checkpoint) or for the deadline to pass.
                preemption.wait_out(notice)
                last_report = time.perf_counter()
            window.exclude(last_report - report_started)  # the report's own time is not a step's
        report_flag = float(rank == 0 and time.perf_counter() - last_report >= cfg.tracking.report_interval_s)
        check_flag = preemption.due(state.step + 1)


# --- set-up helpers ---

def _choose_resume(job: TrainJob, world: int, ray_checkpoint) -> tuple[str, tuple[str, str] | None, float] | None:
    """Rank 0: (checkpoint URI, (universal URI, tag) or None, seconds converting) or None (fresh start)."""
    uri = ckpts.choose_resume(job.run_dir, ray_checkpoint)
    if uri is None:
        return None
    saved = ckpts.read_state(uri)
    ds = job.cfg.deepspeed
    universal.check_resizable(saved, world, uri, uses_nvme="nvme" in (ds.offload_optimizer, ds.offload_param))
    universal.prune_orphans(job.run_dir)
    if not universal.needs_universal(saved, world):
        return uri, None, 0.0
    converted, seconds = universal.ensure_universal(uri, saved)
    log.info("resuming %d workers from %s, written by %d: loading its universal form", world, uri, saved.world_size)
    return uri, (converted, universal.universal_tag(saved)), seconds


def _configure_worker_logging(rank: int) -> None:
    """Rank 0 speaks for rayloom at INFO; libraries and the other ranks only warn."""
    import ray.data

    configure_logging(logging.INFO if rank == 0 else logging.WARNING)
    # Ray Train gives the worker's root logger an INFO console handler; keep library chatter (its own
    # per-report lines included) at WARNING and let rank 0 speak for rayloom.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("rayloom").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for name in ("DeepSpeed", "deepspeed", "torch.distributed", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import transformers

    # DeepSpeed's ZeRO calls torch.distributed.all_gather_into_tensor (every stage) and
    # reduce_scatter_tensor (ZeRO-3), which torch marks deprecated. Python shows a warning once per
    # call site, but Ray Data's batch conversion enters warnings.catch_warnings() for every batch,
    # which resets that record: unfiltered, the same warnings reached the worker's log and the
    # driver's console at every optimizer step.
    warnings.filterwarnings("ignore", message=DEEPSPEED_DEPRECATED_COLLECTIVES, category=FutureWarning)
    # Per-worker "Loading weights" / "Writing model shards" bars would interleave in the driver's log.
    transformers.utils.logging.disable_progress_bar()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_model(cfg: RayloomConfig, model_dir: Path, device):
    if cfg.peft.method == "qlora":
        model = load_quantized_base(model_dir, cfg.peft, device.index or 0)
    else:
        model = load_model(model_dir, cfg.model.dtype, cfg.model.trust_remote_code)
    model.config.use_cache = False
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.peft.method != "none":
        model = wrap_with_peft(model, cfg.peft)
    return model


# --- data ---

def _iter_steps(shard, columns, geometry, epoch: int, skip_rows: int, stride: int, offset: int,
                prefetch: int) -> Iterator:
    """Yield (epoch, rows passed in the epoch's stream, [micro-batches]) for each optimizer step, forever.

    The stream is cut into chunks of accumulation * stride micro-batches; a worker takes every
    stride-th micro-batch of a chunk starting at its offset. Incomplete chunks at the end of an
    epoch are dropped (all workers see equally long streams, so they all drop them). A resumed run
    skips `skip_rows` rows of the stream in its first epoch (rayloom.train.elastic.rows_to_skip).
    """
    micro = geometry.micro_batch_size
    chunk_size = geometry.grad_accum * stride
    skip = skip_rows // micro
    while True:
        yielded, index, chunk = False, 0, []
        for batch in shard.iter_torch_batches(batch_size=micro, drop_last=True, prefetch_batches=prefetch):
            index += 1
            if index <= skip:
                continue
            chunk.append({c: batch[c] for c in columns})
            if len(chunk) == chunk_size:
                yielded = True
                yield epoch, index * micro, chunk[offset::stride]
                chunk = []
        if not yielded and skip == 0:
            raise UserError(f"the train split is too small for one optimizer step per worker: a step needs "
                            f"{geometry.rows_per_worker_step * stride} rows per worker (micro_batch_size * "
                            "accumulation); lower train.micro_batch_size / train.global_batch_size or add data")
        epoch, skip = epoch + 1, 0


def _validation_batches(val_shard, micro: int, dp: int, dp_rank: int, num_batches: int) -> list[dict]:
    """This rank's validation micro-batches, read once and kept: every dp-th micro-batch of the
    (unsplit, small) validation split, so tensor-parallel peers get the same ones."""
    batches = []
    for index, batch in enumerate(val_shard.iter_torch_batches(batch_size=micro)):
        if len(batches) >= num_batches:
            break
        if index % dp == dp_rank:
            batches.append(batch)
    return batches


def _evaluate(engine, batches: list[dict], objective, tp: int, device) -> float:
    """Target-mean loss over the validation batches of all data-parallel ranks."""
    import torch
    import torch.distributed as dist

    totals = torch.zeros(2, dtype=torch.float64)
    engine.eval()
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            totals[0] += float(objective.loss_sum(engine, batch))
            totals[1] += float(objective.count_targets(batch))
    engine.train()
    dist.all_reduce(totals)
    totals /= tp  # tensor-parallel peers computed the same batches
    return float(totals[0] / max(totals[1], 1.0))
