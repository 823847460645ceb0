"""Build the DeepSpeed config dict from the typed config; nobody hand-writes DeepSpeed JSON.

Batch geometry is decided here once: the micro-batch is per worker, the data-parallel degree is
`num_workers / tensor_parallel_size`, and `train.global_batch_size` (when set) stays fixed across
worker counts by changing the gradient-accumulation steps. DeepSpeed checks the same identity
(train_batch_size = micro * accumulation * data-parallel ranks) when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config import DeepSpeedConfig, TrainConfig
from rayloom.errors import UserError

# Report steps through rayloom's own metrics; DeepSpeed's periodic prints would only repeat them.
_NEVER = 10**12


@dataclass(frozen=True)
class BatchGeometry:
    micro_batch_size: int
    grad_accum: int
    data_parallel_size: int
    tensor_parallel_size: int

    @property
    def world_size(self) -> int:
        return self.data_parallel_size * self.tensor_parallel_size

    @property
    def global_batch_size(self) -> int:
        """Rows per optimizer step, over all data-parallel ranks and accumulation steps."""
        return self.micro_batch_size * self.grad_accum * self.data_parallel_size

    @property
    def rows_per_worker_step(self) -> int:
        return self.micro_batch_size * self.grad_accum


def build_batch_geometry(train: TrainConfig, ds: DeepSpeedConfig, world_size: int | None = None) -> BatchGeometry:
    world = world_size or train.num_workers
    tp = ds.tensor_parallel_size
    if world % tp:
        raise UserError(f"invalid config value deepspeed.tensor_parallel_size={tp}: must divide "
                        f"train.num_workers={world}")
    dp = world // tp
    per_step = train.micro_batch_size * dp
    if not train.global_batch_size:
        return BatchGeometry(train.micro_batch_size, 1, dp, tp)
    if train.global_batch_size % per_step:
        raise UserError(f"invalid config value train.global_batch_size={train.global_batch_size}: must be a "
                        f"multiple of train.micro_batch_size * data-parallel workers = {per_step}")
    return BatchGeometry(train.micro_batch_size, train.global_batch_size // per_step, dp, tp)


def _offload(device: str, ds: DeepSpeedConfig, use_gpu: bool) -> dict:
    # Pinned host memory only helps (and only works) with a CUDA device to copy to.
    section: dict = {"device": device, "pin_memory": use_gpu}
    if device == "nvme":
        section["nvme_path"] = ds.nvme_path
    return section


def build_zero_section(ds: DeepSpeedConfig, use_gpu: bool) -> dict:
    zero: dict = {"stage": ds.zero_stage}
    if ds.zero_stage == 0:
        return zero
    zero.update(
        overlap_comm=ds.overlap_comm,
        contiguous_gradients=ds.contiguous_gradients,
        reduce_scatter=True,
        reduce_bucket_size=ds.reduce_bucket_size,
    )
    if ds.zero_stage in (1, 2):
        zero.update(allgather_partitions=True, allgather_bucket_size=ds.allgather_bucket_size)
    if ds.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size=ds.stage3_prefetch_bucket_size,
            stage3_param_persistence_threshold=ds.stage3_param_persistence_threshold,
            stage3_max_live_parameters=ds.stage3_max_live_parameters,
            # The final checkpoint gathers full weights for the exported Hugging Face model.
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(ds.offload_optimizer, ds, use_gpu)
    if ds.offload_param != "none":
        zero["offload_param"] = _offload(ds.offload_param, ds, use_gpu)
    return zero


def build_optimizer_section(train: TrainConfig, ds: DeepSpeedConfig, use_gpu: bool) -> dict:
    params: dict = {
        "lr": train.lr,
        "betas": [train.adam_beta1, train.adam_beta2],
        "eps": train.adam_eps,
        "weight_decay": train.weight_decay,
    }
    if ds.offload_optimizer == "none" and not use_gpu:
        # DeepSpeed's default AdamW is FusedAdam, a CUDA kernel; on CPU use torch's AdamW.
        # (With optimizer offload DeepSpeed picks its CPU Adam, built once with g++/ninja.)
        params["torch_adam"] = True
        params["adam_w_mode"] = True
    return {"type": "AdamW", "params": params}


def build_deepspeed_config(train: TrainConfig, ds: DeepSpeedConfig, geometry: BatchGeometry,
                           use_gpu: bool | None = None) -> dict:
    """The complete `config=` dict for `deepspeed.initialize`."""
    use_gpu = train.use_gpu if use_gpu is None else use_gpu
    config: dict = {
        "train_micro_batch_size_per_gpu": geometry.micro_batch_size,
        "gradient_accumulation_steps": geometry.grad_accum,
        "train_batch_size": geometry.global_batch_size,
        # 0 disables clipping in DeepSpeed too.
        "gradient_clipping": train.grad_clip,
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
        "zero_optimization": build_zero_section(ds, use_gpu),
        "optimizer": build_optimizer_section(train, ds, use_gpu),
        # torch's AdamW is a well-tested optimizer that ZeRO's allow-list does not name.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {
            "enabled": ds.precision == "fp16",
            # 0 -> dynamic loss scaling starting at 2**initial_scale_power.
            "loss_scale": ds.loss_scale,
            "initial_scale_power": ds.initial_scale_power,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
    }
    if geometry.tensor_parallel_size > 1:
        config["tensor_parallel"] = {"autotp_size": geometry.tensor_parallel_size}
        # DeepSpeed checks train_batch_size against the whole world size before it builds the
        # tensor-parallel groups, so it cannot be the data-parallel batch here; leave it out and
        # let DeepSpeed derive its own (micro * accumulation * world) count.
        del config["train_batch_size"]
    if train.gradient_checkpointing:
        config["activation_checkpointing"] = {
            "partition_activations": ds.partition_activations,
            "cpu_checkpointing": ds.cpu_checkpointing,
            "contiguous_memory_optimization": False,
            "synchronize_checkpoint_boundary": False,
        }
    if "nvme" in (ds.offload_optimizer, ds.offload_param):
        config["aio"] = {"block_size": ds.aio_block_size, "queue_depth": ds.aio_queue_depth,
                         "single_submit": False, "overlap_events": True}
    return config
