"""From the typed config to a plan: the Setup, the capacities it is judged against, and the verdict."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

from rayloom.config import RayloomConfig
from rayloom.planner.hardware import Hardware, resolve_hardware
from rayloom.planner.memory import Breakdown, GiB, Setup, estimate
from rayloom.planner.shapes import ModelShape, model_shape
from rayloom.planner.throughput import Throughput, predict
from rayloom.train.ds_config import build_batch_geometry

log = logging.getLogger(__name__)

DEFAULT_DEVICE_OVERHEAD_GB = 1.0
DEFAULT_HOST_OVERHEAD_GB = 1.5


def setup_from_config(cfg: RayloomConfig) -> Setup:
    """The memory-relevant knobs of the configured run (batch geometry as the trainer computes it)."""
    train, ds, peft, objective, plan = cfg.train, cfg.deepspeed, cfg.peft, cfg.objective, cfg.plan
    geometry = build_batch_geometry(train, ds)
    preference = objective.name in ("dpo", "ipo", "orpo")
    uses_reference = objective.name in ("dpo", "ipo")
    reference_copy = uses_reference and (objective.reference == "copy" or peft.method == "none")
    return Setup(
        zero_stage=ds.zero_stage, offload_optimizer=ds.offload_optimizer, offload_param=ds.offload_param,
        precision=ds.precision, num_workers=train.num_workers, tensor_parallel_size=ds.tensor_parallel_size,
        micro_batch_size=geometry.micro_batch_size, grad_accum=geometry.grad_accum, seq_len=cfg.data.seq_len,
        gradient_checkpointing=train.gradient_checkpointing, use_gpu=train.use_gpu,
        peft_method=peft.method, lora_r=peft.r, lora_targets=tuple(peft.target_modules),
        lora_dropout=peft.dropout, preference=preference, uses_reference=uses_reference,
        reference_copy=reference_copy, reduce_bucket_size=ds.reduce_bucket_size,
        allgather_bucket_size=ds.allgather_bucket_size, stage3_prefetch_bucket_size=ds.stage3_prefetch_bucket_size,
        stage3_param_persistence_threshold=ds.stage3_param_persistence_threshold,
        stage3_max_live_parameters=ds.stage3_max_live_parameters, overlap_comm=ds.overlap_comm,
        contiguous_gradients=ds.contiguous_gradients, attention=plan.attention,
        rollout_kv_cache_bytes=plan.rollout_kv_cache_gb * GiB,
        device_overhead_bytes=(plan.device_overhead_gb if plan.device_overhead_gb >= 0
                               else DEFAULT_DEVICE_OVERHEAD_GB) * GiB,
        host_overhead_bytes=(plan.host_overhead_gb if plan.host_overhead_gb >= 0
                             else DEFAULT_HOST_OVERHEAD_GB) * GiB,
    )


@dataclass(frozen=True)
class Capacity:
    """What one worker's peak is judged against. device_bytes is None when it cannot be known here."""

    device_bytes: float | None
    host_bytes: float
    workers_per_node: int
    device_is_host: bool
    device_source: str
    host_source: str
    headroom: float

    def usable(self, nbytes: float | None) -> float | None:
        return None if nbytes is None else nbytes * (1 - self.headroom)


def host_memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def detect_capacity(cfg: RayloomConfig) -> Capacity:
    plan, train = cfg.plan, cfg.train
    host = plan.host_memory_gb * GiB if plan.host_memory_gb else host_memory_bytes()
    host_source = "plan.host_memory_gb" if plan.host_memory_gb else "this machine's RAM"
    workers = plan.workers_per_node or (train.num_workers if not train.use_gpu else min(train.num_workers, 8))
    if not train.use_gpu:
        # A CPU-only run: the "device" is host RAM, shared by the workers of a node.
        return Capacity(host, host, workers, True, host_source + " (CPU run: device = host RAM)", host_source,
                        plan.headroom)
    if plan.device_memory_gb:
        return Capacity(plan.device_memory_gb * GiB, host, workers, False, "plan.device_memory_gb", host_source,
                        plan.headroom)
    device, source = _local_gpu_memory()
    return Capacity(device, host, workers, False, source, host_source, plan.headroom)


def _local_gpu_memory() -> tuple[float | None, str]:
    import torch  # only here: planning a CPU run needs no torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return float(props.total_memory), f"detected {props.name}"
    return None, "unknown (no GPU here; declare plan.device_memory_gb)"


@dataclass
class Plan:
    shape: ModelShape
    setup: Setup
    breakdown: Breakdown
    capacity: Capacity
    throughput: Throughput
    fits: bool | None  # None: a capacity is unknown
    problems: list[str] = field(default_factory=list)

    @property
    def node_peak(self) -> float:
        """What the workers of one node hold in host RAM together (CPU runs: everything)."""
        per_worker = self.breakdown.total_peak if self.capacity.device_is_host else self.breakdown.host_peak
        return per_worker * self.capacity.workers_per_node


def judge(breakdown: Breakdown, capacity: Capacity) -> tuple[bool | None, list[str]]:
    """(fits, what does not fit). fits is None when the device capacity is unknown and the host fits."""
    problems = []
    per_worker = breakdown.total_peak if capacity.device_is_host else breakdown.host_peak
    node = per_worker * capacity.workers_per_node
    host_ok = capacity.usable(capacity.host_bytes)
    if node > host_ok:
        problems.append(f"host: {capacity.workers_per_node} worker(s) x {per_worker / GiB:.2f} GiB = "
                        f"{node / GiB:.2f} GiB > {host_ok / GiB:.2f} GiB usable of {capacity.host_bytes / GiB:.2f} GiB "
                        f"({capacity.host_source}, headroom {capacity.headroom:.0%})")
    if capacity.device_is_host:
        return not problems, problems
    device_ok = capacity.usable(capacity.device_bytes)
    if device_ok is None:
        return (None if not problems else False), problems
    if breakdown.device_peak > device_ok:
        problems.append(f"device: {breakdown.device_peak / GiB:.2f} GiB per worker > {device_ok / GiB:.2f} GiB usable "
                        f"of {capacity.device_bytes / GiB:.2f} GiB ({capacity.device_source}, headroom "
                        f"{capacity.headroom:.0%})")
    return not problems, problems


def hardware_for(cfg: RayloomConfig, flops: float | None = None) -> Hardware:
    """The worker's rates (rayloom.planner.hardware). flops: None -> declared, else measured here where
    possible, else the table; 0 -> declared or the table, nothing measured (the preflight, tune);
    > 0 -> that FLOP/s ceiling."""
    hardware = resolve_hardware(cfg, measure=flops is None)
    return dataclasses.replace(hardware, peak_flops=flops) if flops else hardware


def plan_setup(shape: ModelShape, setup: Setup, capacity: Capacity, hardware: Hardware) -> Plan:
    breakdown = estimate(shape, setup)
    fits, problems = judge(breakdown, capacity)
    return Plan(shape, setup, breakdown, capacity, predict(shape, setup, hardware), fits, problems)


def plan_run(cfg: RayloomConfig, *, flops: float | None = None) -> Plan:
    """The memory breakdown, capacity verdict and predicted step time / tokens/s of the configured run
    (flops: see hardware_for)."""
    return plan_setup(model_shape(cfg), setup_from_config(cfg), detect_capacity(cfg), hardware_for(cfg, flops))
