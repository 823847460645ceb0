"""The one per-worker training loop that Ray Train's TorchTrainer runs on every worker.

Read top to bottom: set up (threads, seed, model, PEFT, DeepSpeed engine), resume from the newest
complete checkpoint, then step: fetch this step's micro-batches, count the step's targets over
all ranks, forward/backward each micro-batch through DeepSpeed, report metrics, checkpoint every
`train.checkpoint_every` steps and at the end. Metrics leave the worker only via ray.train.report.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.train import checkpoints as ckpts

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a worker needs, picklable: the typed config plus what the driver resolved."""

    cfg: RayloomConfig
    # Storage URI of this run's directory (checkpoints live under it).
    run_dir: str
    # "split": each worker reads its own streaming split of the train data (Ray Data's default);
    # "stride": every worker reads all rows and keeps those of its data-parallel rank, so the
    # ranks of one tensor-parallel group see identical batches.
    data_mode: str = "split"
    has_validation: bool = False


def train_fn(config: dict) -> None:
    fn_started = time.perf_counter()
    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from deepspeed.runtime.utils import clip_grad_norm_

    from rayloom.models import resolve_model_dir
    from rayloom.models.peft_wrap import count_parameters
    from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config
    from rayloom.train.metrics import flops_per_token, measure_peak_flops, memory_gib, mfu
    from rayloom.train.objectives import build_objective

    marks = {"imports": time.perf_counter() - fn_started}
    job: TrainJob = config["job"]
    cfg = job.cfg
    train = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _quiet_libraries(rank)
    torch.set_num_threads(train.cpus_per_worker)
    device = torch.device(f"cuda:{ctx.get_local_rank()}") if train.use_gpu else torch.device("cpu")
    if train.use_gpu:
        torch.cuda.set_device(device)
    # Same seed on every rank: ZeRO-3 and AutoTP partition each rank's own copy of freshly
    # initialised (LoRA) weights, so the copies must be identical.
    _seed_everything(train.seed)

    # --- model, objective, DeepSpeed engine ---
    geometry = build_batch_geometry(train, cfg.deepspeed, world)
    ds_config = build_deepspeed_config(train, cfg.deepspeed, geometry)
    model_dir = resolve_model_dir(cfg.model)
    model = _build_model(cfg, model_dir, device)
    marks["model"] = time.perf_counter() - fn_started
    objective = build_objective(cfg)
    num_params, num_trainable = count_parameters(model)
    embed = model.get_input_embeddings().weight
    num_embedding = getattr(embed, "ds_numel", None) or embed.numel()
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=_param_groups(model, train.weight_decay),
        config=ds_config,
        lr_scheduler=lambda optimizer: _build_lr_scheduler(optimizer, train),
    )
    if objective.attach is not None:  # e.g. the frozen reference policy of DPO
        objective.attach(engine, ds_config)
    marks["deepspeed"] = time.perf_counter() - fn_started
    # Parameters this rank holds after ZeRO-3 partitioning / AutoTP sharding (the full count otherwise).
    params_local = sum((p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel())
                       for p in engine.module.parameters())
    tp = geometry.tensor_parallel_size
    dp_rank = rank // tp  # DeepSpeed's AutoTP mesh puts each tensor-parallel group on consecutive ranks

    # --- resume from the newest complete checkpoint (rank 0 decides, everyone follows) ---
    state = ckpts.TrainerState(world_size=world, zero_stage=cfg.deepspeed.zero_stage, tensor_parallel_size=tp,
                               precision=cfg.deepspeed.precision, peft_method=cfg.peft.method,
                               model_dtype=cfg.model.dtype, objective=cfg.objective.name,
                               base_model=str(model_dir))
    choice = [_choose_resume(job.run_dir, ray.train.get_checkpoint()) if rank == 0 else None]
    dist.broadcast_object_list(choice, src=0)
    if choice[0] is not None:
        state = _resume(engine, choice[0], state, rank, world, uses_peft=cfg.peft.method != "none")
    # One token per attempt, shared by all ranks, so checkpoint names never collide with an earlier attempt's.
    token = [uuid.uuid4().hex[:6] if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    token = token[0]
    marks["resume"] = time.perf_counter() - fn_started

    # --- throughput bookkeeping ---
    precision_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[cfg.deepspeed.precision]
    peak = train.peak_flops or measure_peak_flops(precision_dtype, device.type)
    seq_len = cfg.data.seq_len
    arch = engine.module.config  # the loaded model's own shape (model.* only describes presets)
    fpt = flops_per_token(num_params, num_trainable, num_embedding, arch.num_hidden_layers, arch.hidden_size,
                          seq_len)
    marks["peak_probe"] = time.perf_counter() - fn_started
    if rank == 0:
        log.info("worker start-up (s since train_fn began): %s",
                 ", ".join(f"{k} {v:.1f}" for k, v in marks.items()))
        log.info("training %s: %.2fM params (%.2fM trainable), %d workers (dp %d x tp %d), micro %d x accum %d "
                 "= global batch %d, ZeRO-%d, %s", cfg.model.name, num_params / 1e6, num_trainable / 1e6, world,
                 geometry.data_parallel_size, tp, geometry.micro_batch_size, geometry.grad_accum,
                 geometry.global_batch_size, cfg.deepspeed.zero_stage, cfg.deepspeed.precision)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation") if job.has_validation and train.eval_batches else None
    stride = geometry.data_parallel_size if job.data_mode == "stride" else 1
    offset = dp_rank if job.data_mode == "stride" else 0
    steps = _iter_steps(train_shard, objective.columns, geometry, state, stride, offset, train.prefetch_batches)

    # --- the loop ---
    # ray.train.report is a barrier whose queue the Ray Train controller drains on its own poll
    # interval, so reporting every step would pace training to that interval. Workers record
    # every tracking.log_every-th step and report the recorded steps together, at most every
    # tracking.report_interval_s seconds (rank 0's clock, shared through the per-step all-reduce),
    # and always at checkpoints.
    val_batches = None
    own_grad_norm = cfg.deepspeed.zero_stage == 0
    recorded: list[dict] = []
    report_flag, last_report = 0.0, time.perf_counter()
    engine.train()
    window_start, window_tokens, window_positions, window_steps = time.perf_counter(), 0.0, 0, 0
    window_data_s = 0.0
    while state.step < train.max_steps:
        fetch_start = time.perf_counter()
        epoch, rows_in_epoch, micro_batches = next(steps)
        micro_batches = [{k: v.to(device, non_blocking=True) for k, v in mb.items()} for mb in micro_batches]
        window_data_s += time.perf_counter() - fetch_start
        # Targets of the whole optimizer step, over every rank: each micro-batch's summed loss is
        # scaled so the update equals the token mean of the global batch (DeepSpeed averages
        # gradients over data-parallel ranks and accumulation steps; the scale undoes that).
        local = torch.tensor([sum(float(objective.count_targets(mb)) for mb in micro_batches),
                              sum(float(objective.count_tokens(mb)) for mb in micro_batches),
                              report_flag], dtype=torch.float64)
        dist.all_reduce(local)
        global_targets, global_tokens = (local[:2] / tp).tolist()
        report_due = bool(local[2] > 0)
        scale = geometry.data_parallel_size * geometry.grad_accum / max(global_targets, 1.0)
        lr = scheduler.get_last_lr()[0]
        loss_sum = torch.zeros((), dtype=torch.float64)
        own_norm = None
        for index, mb in enumerate(micro_batches):
            loss = objective.loss_sum(engine, mb)
            loss_sum += loss.detach().double().cpu()
            engine.backward(loss * scale)
            if own_grad_norm and index == len(micro_batches) - 1:
                # Without ZeRO, DeepSpeed clips with this norm but does not keep it; measure it the
                # same way (gradients are already averaged here), with no clipping (max_norm=inf).
                own_norm = float(clip_grad_norm_(engine.module.parameters(), float("inf"), mpu=engine.mpu))
            engine.step()
        dist.all_reduce(loss_sum)
        grad_norm = engine.get_global_grad_norm()
        grad_norm = own_norm if grad_norm is None else grad_norm
        state.step += 1
        state.epoch, state.rows_in_epoch = epoch, rows_in_epoch
        state.tokens_seen += int(global_tokens)
        state.samples_seen += geometry.global_batch_size
        window_tokens += global_tokens
        window_positions += geometry.global_batch_size * seq_len
        window_steps += 1

        last = state.step >= train.max_steps
        checkpoint_now = last or state.step % train.checkpoint_every == 0
        eval_now = val_shard is not None and (last or state.step % train.eval_every == 0)
        if checkpoint_now or eval_now or state.step % cfg.tracking.log_every == 0:
            elapsed = time.perf_counter() - window_start
            metrics = {
                "step": state.step, "epoch": state.epoch,
                "loss": float(loss_sum.item() / tp / max(global_targets, 1.0)),
                "lr": float(lr),
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "tokens_per_s": window_tokens / elapsed,
                "step_time_s": elapsed / window_steps,
                # Time spent waiting for data (Ray Data streaming) per step, part of step_time_s.
                "data_wait_s": window_data_s / window_steps,
                "mfu": mfu(fpt, window_positions / elapsed / world, peak),
                "peak_flops_per_worker": peak,
                "memory_gib": memory_gib(device.type),
                "tokens_seen": state.tokens_seen, "samples_seen": state.samples_seen,
                "global_batch_size": geometry.global_batch_size, "num_workers": world,
                "num_params": num_params, "num_trainable": num_trainable, "params_local": params_local,
            }
            if eval_now:
                if val_batches is None:
                    val_batches = _validation_batches(val_shard, geometry.micro_batch_size,
                                                      geometry.data_parallel_size, dp_rank, train.eval_batches)
                metrics["val_loss"] = _evaluate(engine, val_batches, objective, tp, device)
            if objective.report_metrics is not None:  # a collective: every rank reaches this line
                metrics.update(objective.report_metrics())
            recorded.append(metrics)
            window_start, window_tokens, window_positions, window_steps = time.perf_counter(), 0.0, 0, 0
            window_data_s = 0.0
        if checkpoint_now or (report_due and recorded):
            payload = {**recorded[-1], "history": recorded}
            if checkpoint_now:
                state.final = last
                _save_and_report(engine, state, payload, cfg, model_dir, token, rank)
            else:
                ray.train.report(payload)
            recorded, last_report = [], time.perf_counter()
            window_start = time.perf_counter()  # the report's own time is not a step's
        report_flag = float(rank == 0 and time.perf_counter() - last_report >= cfg.tracking.report_interval_s)


# --- set-up helpers ---

def _quiet_libraries(rank: int) -> None:
    import ray.data

    from rayloom.log_setup import configure_logging

    configure_logging(logging.INFO if rank == 0 else logging.WARNING)
    # Ray Train gives the worker's root logger an INFO console handler; keep library chatter (its own
    # per-report lines included) at WARNING and let rank 0 speak for rayloom.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("rayloom").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for name in ("DeepSpeed", "deepspeed", "torch.distributed", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import transformers

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
    from rayloom.models import load_model
    from rayloom.models.peft_wrap import load_quantized_base, wrap_with_peft

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


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _build_lr_scheduler(optimizer, train):
    """Linear warmup then cosine decay to lr * min_lr_ratio at max_steps (transformers' schedule)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps=train.warmup_steps,
                                                       num_training_steps=train.max_steps,
                                                       min_lr_rate=train.min_lr_ratio)


# --- data ---

def _iter_steps(shard, columns, geometry, state, stride: int, offset: int, prefetch: int) -> Iterator:
    """Yield (epoch, rows passed in the epoch's stream, [micro-batches]) for each optimizer step, forever.

    The stream is cut into chunks of accumulation * stride micro-batches; a worker takes every
    stride-th micro-batch of a chunk starting at its offset. Incomplete chunks at the end of an
    epoch are dropped (all workers see equally long streams, so they all drop them). A resumed run
    skips the rows its checkpoint had already consumed in the current epoch.
    """
    micro = geometry.micro_batch_size
    chunk_size = geometry.grad_accum * stride
    epoch, skip = state.epoch, state.rows_in_epoch // micro
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
            from rayloom.errors import UserError

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


# --- checkpoints ---

def _choose_resume(run_dir: str, ray_checkpoint) -> str | None:
    """The newest complete checkpoint of the run. Ray Train's own latest checkpoint is only a hint:
    it is registered once uploaded, which can be before the completion marker."""
    newest = ckpts.latest_complete(run_dir)
    if ray_checkpoint is not None:
        name = ray_checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
        if newest is None or not newest[1].rstrip("/").endswith(name):
            log.warning("Ray Train's latest checkpoint %s is incomplete; resuming from %s instead", name,
                        newest[1] if newest else "scratch")
    return newest[1] if newest else None


def _resume(engine, checkpoint_uri: str, fresh, rank: int, world: int, uses_peft: bool):
    import torch

    from rayloom import storage
    from rayloom.errors import UserError

    saved = ckpts.read_state(checkpoint_uri)
    if saved.world_size != world or saved.tensor_parallel_size != fresh.tensor_parallel_size:
        raise UserError(f"checkpoint {checkpoint_uri} was written by {saved.world_size} workers (tensor parallel "
                        f"{saved.tensor_parallel_size}); resume with train.num_workers={saved.world_size}, or export "
                        "it (`rayloom export`) and start a new run from the exported model")
    with storage.local_copy(checkpoint_uri) as local:
        load_path, _ = engine.load_checkpoint(str(Path(local) / ckpts.DS_DIR), tag=saved.ds_tag,
                                              load_module_strict=not uses_peft)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {checkpoint_uri}")
        rng_file = Path(local) / ckpts.RNG_DIR / f"rank{rank}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=False))
    name = checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]
    saved.resumes = [*saved.resumes, {"from_step": saved.step, "checkpoint": name}]
    saved.final = False
    if rank == 0:
        log.info("resumed from %s at step %d (epoch %d, %d rows into it)", name, saved.step, saved.epoch,
                 saved.rows_in_epoch)
    return saved


def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_and_report(engine, state, metrics: dict, cfg: RayloomConfig, model_dir: Path, token: str,
                     rank: int) -> None:
    """Every rank writes its part locally, Ray Train uploads all parts into one directory, and
    once every rank is through (a barrier after the report) rank 0 writes the completion marker."""
    import ray.train
    import torch
    import torch.distributed as dist

    local = Path(tempfile.mkdtemp(prefix="rayloom-ckpt-"))
    try:
        state.ds_tag = f"step{state.step:08d}"
        (local / ckpts.DS_DIR).mkdir()
        uses_peft = cfg.peft.method != "none"
        # Frozen base weights of a PEFT run are not saved: they come back from the base model.
        engine.save_checkpoint(str(local / ckpts.DS_DIR), tag=state.ds_tag,
                               client_state={"trainer_state": json.loads(state.to_json())},
                               exclude_frozen_parameters=uses_peft)
        (local / ckpts.RNG_DIR).mkdir()
        torch.save(_rng_state(), local / ckpts.RNG_DIR / f"rank{rank}.pt")
        if state.final:
            _write_final_model(engine, cfg, model_dir, local, rank)
        if rank == 0:
            (local / ckpts.STATE_FILE).write_text(state.to_json())
            if uses_peft:
                engine.module.peft_config["default"].save_pretrained(str(local / ckpts.PEFT_CONFIG_DIR))
        name = ckpts.checkpoint_name(state.step, token)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(local)),
                         checkpoint_dir_name=name)
        # report() returns on each rank once that rank's upload is done; after the barrier all are.
        dist.barrier()
        if rank == 0:
            persisted = ray.train.get_checkpoint()
            ckpts.mark_complete(persisted.filesystem, persisted.path)
        dist.barrier()
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _write_final_model(engine, cfg: RayloomConfig, model_dir: Path, local: Path, rank: int) -> None:
    """Consolidate the weights (a collective under ZeRO-3 / AutoTP) and write, on rank 0, the
    Hugging Face model (full training) or the peft adapter (PEFT training)."""
    import torch

    from rayloom.models.peft_wrap import copy_side_files

    partitioned = engine.zero_optimization_partition_weights() or engine.autotp_size() > 1
    # DeepSpeed's own gather, the one save_16bit_model uses, without its torch.save round trip.
    state_dict = engine._consolidated_16bit_state_dict() if partitioned else (
        engine.module_state_dict() if rank == 0 else None)
    if rank != 0:
        return
    dtype = getattr(torch, cfg.model.dtype)
    state_dict = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    if cfg.peft.method != "none":
        engine.module.save_pretrained(str(local / ckpts.ADAPTER_DIR), state_dict=state_dict,
                                      safe_serialization=True)
    else:
        out = local / ckpts.MODEL_DIR
        engine.module.save_pretrained(str(out), state_dict=state_dict, safe_serialization=True)
        copy_side_files(model_dir, out)
