"""What one training worker's hardware can do, for the step-time model (rayloom.planner.throughput).

Every number is a vendor datasheet value, a measurement, or an assumption, and says which. GPU rows
are datasheet values for the SXM/PCIe part named (dense, no sparsity; fp32 is the non-TF32 rate,
since torch leaves TF32 matmuls off by default). Collective bandwidths are NCCL "bus bandwidth"
(nccl-tests' busbw: allreduce moves 2(n-1)/n of the buffer per rank, reduce-scatter and all-gather
(n-1)/n); on NVLink NCCL reaches about 80% of the per-direction link rate for all three — an
assumption from published nccl-tests runs, not measured here.

The CPU row was measured on the 2-core development machine with 1 thread per worker (the benchmark's
and the tiny configs' `train.cpus_per_worker=1`): a matmul probe (`measure_peak_flops`), a tensor
copy, and gloo collectives between 2 processes on one host. Gloo's collectives differ a lot from
each other (its allreduce is a pipelined ring; DeepSpeed's ZeRO-1/2 reduce-scatter is one
`dist.reduce` per owning rank, and gloo's reduce and all-gather are far slower), so they are kept
apart. Every value can be declared instead (plan.* keys) when planning other hardware.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

from rayloom.errors import UserError

GB = 1e9


@dataclass(frozen=True)
class Hardware:
    """One worker's rates. Bandwidths in bytes/s; FLOP/s in the training precision."""

    kind: str
    peak_flops: float
    # Fraction of peak the forward/backward matmuls reach at large micro-batches (no communication:
    # that is its own term).
    compute_efficiency: float
    # A micro-batch of this many tokens reaches half of that (small matmuls under-fill the device):
    # efficiency x tokens / (tokens + half_efficiency_tokens). 0: no small-batch penalty.
    half_efficiency_tokens: float
    memory_bw: float       # the device's memory (CPU: the worker's share of RAM bandwidth)
    host_memory_bw: float  # host RAM, for an optimizer offloaded to the CPU
    host_link_bw: float    # device <-> host (PCIe); on a CPU "device" a memory copy (read + write)
    allreduce_bw: float    # bus bandwidth between data-parallel workers
    reduce_scatter_bw: float
    allgather_bw: float
    source: str = ""

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"


def _gpu(kind: str, bf16_tflops: float, fp32_tflops: float, hbm_gbs: float, link_gbs: float, pcie_gbs: float,
         note: str) -> dict:
    bus = 0.8 * link_gbs * GB  # NCCL busbw ~80% of the per-direction link rate (assumption)
    return {"kind": kind, "bf16": bf16_tflops * 1e12, "fp32": fp32_tflops * 1e12, "memory_bw": hbm_gbs * GB,
            # DeepSpeedCPUAdam on the host: a node's DRAM bandwidth shared by its 8 GPUs' optimizer
            # threads, ~40 GB/s each (assumption: 2 sockets x ~300 GB/s DDR5 / 8 workers, halved for
            # the cores' own limits).
            "host_memory_bw": 40 * GB,
            "host_link_bw": 0.8 * pcie_gbs * GB,  # ~80% of the PCIe per-direction rate (assumption)
            "allreduce_bw": bus, "reduce_scatter_bw": bus, "allgather_bw": bus,
            # Dense Llama training on current GPUs reaches ~50-60% MFU before communication
            # (torchtitan, Megatron-LM reports): 0.55 is an assumption. Small micro-batches under-fill
            # the SMs; half the efficiency at 512 tokens is an assumption.
            "compute_efficiency": 0.55, "half_efficiency_tokens": 512, "note": note}


# Datasheet values (NVIDIA product pages / whitepapers). link = NVLink per direction per GPU;
# GPUs without NVLink talk over PCIe (link = PCIe rate).
GPU_TABLE = {
    "h100": _gpu("h100", 989.4, 66.9, 3350, 450, 64, "H100 SXM5 80GB datasheet: HBM3, NVLink 4, PCIe Gen5"),
    "h200": _gpu("h200", 989.4, 66.9, 4800, 450, 64, "H200 SXM 141GB datasheet: HBM3e, NVLink 4, PCIe Gen5"),
    "a100": _gpu("a100", 312.0, 19.5, 2039, 300, 32, "A100 SXM4 80GB datasheet: HBM2e, NVLink 3, PCIe Gen4"),
    "l4": _gpu("l4", 121.0, 30.3, 300, 32, 32, "L4 datasheet: GDDR6, no NVLink (PCIe Gen4)"),
    # AWS's A10G runs below the A10's datasheet clocks: 70 TFLOP/s bf16 as conf/plan/a10g_24gb.yaml states.
    "a10g": _gpu("a10g", 70.0, 31.2, 600, 32, 32, "A10G (AWS g5): GDDR6 600 GB/s, no NVLink (PCIe Gen4)"),
}
# A GPU run whose GPU is neither here nor declared (plan.device_kind) is planned as an H100.
DEFAULT_GPU = "h100"

# Measured on the 2-core development machine (Intel Xeon, AVX-512), 1 thread per worker, 2 workers:
CPU_ROW = {
    "kind": "cpu",
    # measure_peak_flops(1024^2 matmul): 125 GFLOP/s fp32, ~400 GFLOP/s bf16 (AMX/AVX-512 BF16).
    "fp32": 125e9, "bf16": 400e9,
    # One 19.7M-parameter fp32 Llama step of 512 tokens (bench/run.py plan): forward + backward took
    # ~0.6 s for 53 GFLOP, 0.7 of the fp32 probe. bf16 not validated. A core's matmuls saturate at
    # a few dozen rows: no small-batch penalty.
    "compute_efficiency": 0.7, "half_efficiency_tokens": 0,
    # torch copy_ of a 79 MB fp32 tensor: 11 GB/s read + write; torch's single-tensor AdamW ran at
    # 196M params/s (~15 GB/s at its 80 B/param), so 11 GB/s per pass is the conservative side.
    "memory_bw": 11 * GB, "host_memory_bw": 11 * GB, "host_link_bw": 5.5 * GB,
    # gloo between 2 processes on one host, 79 MB fp32 (torch.distributed): all_reduce 1.9 GB/s,
    # DeepSpeed's reduce-scatter (2 x dist.reduce to each owner) 0.72 GB/s, all_gather_into_tensor 0.41 GB/s.
    "allreduce_bw": 1.9 * GB, "reduce_scatter_bw": 0.72 * GB, "allgather_bw": 0.41 * GB,
    "note": "CPU (gloo) rates measured on the 2-core development machine, 1 thread per worker",
}

GPU_KINDS = tuple(GPU_TABLE)  # rayloom.config.plan.DEVICE_KINDS names the same rows


def gpu_kind_from_name(name: str) -> str | None:
    """The table row of a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100"); None if unknown."""
    upper = name.upper()
    for token in ("H200", "H100", "A100", "A10G"):
        if token in upper:
            return token.lower()
    return "l4" if "L4" in upper.replace("-", " ").split() else None


@functools.lru_cache(maxsize=8)
def measure_memory_bandwidth(threads: int, nbytes: int = 64 * 2**20, repeats: int = 5) -> float:
    """Bytes/s of a tensor copy (read + write) with `threads` threads: the CPU row's memory bandwidth."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(nbytes // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)  # touch the pages first
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - start)
        return 2.0 * nbytes / best
    finally:
        torch.set_num_threads(saved)


@functools.lru_cache(maxsize=8)
def _measured_cpu_flops(dtype: str, threads: int) -> float:
    import torch

    from rayloom.train.metrics import measure_peak_flops

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure_peak_flops(dtype, "cpu")
    finally:
        torch.set_num_threads(saved)


def _local_gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_properties(0).name if torch.cuda.is_available() else None


def resolve_hardware(cfg, *, measure: bool = True) -> Hardware:
    """The rates of one worker of the configured run: plan.* declarations first, then (measure=True)
    what can be measured here (a CPU run's FLOP/s and memory bandwidth; the local GPU's FLOP/s), then
    the table row of plan.device_kind, of the local GPU, or the defaults. No torch import on a CPU
    run with measure=False."""
    plan, train, precision = cfg.plan, cfg.train, cfg.deepspeed.precision
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    notes = []
    kind = plan.device_kind
    if not train.use_gpu:
        if kind not in ("", "cpu"):
            raise UserError(f"invalid config value plan.device_kind={kind}: train.use_gpu=false runs on the CPU "
                            "(plan.device_kind=cpu or empty)")
        kind = "cpu"
    elif kind == "cpu":
        raise UserError("invalid config value plan.device_kind=cpu: train.use_gpu=true runs on a GPU")
    local_gpu = None
    if train.use_gpu and not kind:
        # Without measuring (preflight, tune), torch is not imported to ask for the GPU's name.
        local_gpu = _local_gpu_name() if measure else None
        kind = gpu_kind_from_name(local_gpu) if local_gpu else None
        if kind is None:
            kind = DEFAULT_GPU
            notes.append(f"{'unknown GPU ' + repr(local_gpu) if local_gpu else 'GPU not detected'}: planned as "
                         f"{DEFAULT_GPU} (declare plan.device_kind)")
    row = CPU_ROW if kind == "cpu" else GPU_TABLE[kind]
    notes.append(row["note"])
    peak = row["bf16" if precision in ("bf16", "fp16") else "fp32"]
    peak_source = "table"
    memory_bw = row["memory_bw"]
    if plan.peak_tflops:
        peak, peak_source = plan.peak_tflops * 1e12, "plan.peak_tflops"
    elif train.peak_flops:
        peak, peak_source = train.peak_flops, "train.peak_flops"
    elif measure and kind == "cpu":
        peak, peak_source = _measured_cpu_flops(dtype, train.cpus_per_worker), "measured here"
    elif measure and local_gpu and not plan.device_kind:
        from rayloom.train.metrics import measure_peak_flops

        peak, peak_source = measure_peak_flops(dtype, "cuda"), "measured here"
    if measure and kind == "cpu" and not plan.memory_bandwidth_gbps:
        memory_bw = measure_memory_bandwidth(train.cpus_per_worker)
        notes.append("memory bandwidth measured here")
    notes.append(f"peak FLOP/s: {peak_source}")
    hw = Hardware(kind=kind, peak_flops=peak, compute_efficiency=row["compute_efficiency"],
                  half_efficiency_tokens=row["half_efficiency_tokens"], memory_bw=memory_bw,
                  host_memory_bw=memory_bw if kind == "cpu" else row["host_memory_bw"],
                  host_link_bw=memory_bw / 2 if kind == "cpu" else row["host_link_bw"],
                  allreduce_bw=row["allreduce_bw"], reduce_scatter_bw=row["reduce_scatter_bw"],
                  allgather_bw=row["allgather_bw"], source="; ".join(notes))
    return declared(hw, plan)


def declared(hw: Hardware, plan) -> Hardware:
    """Apply the plan.* rate declarations (0 = keep)."""
    changes: dict = {}
    if plan.compute_efficiency:
        changes["compute_efficiency"] = plan.compute_efficiency
    if plan.memory_bandwidth_gbps:
        changes["memory_bw"] = plan.memory_bandwidth_gbps * GB
        if hw.is_cpu:  # one RAM: the optimizer's host and the copies' link are the same memory
            changes["host_memory_bw"] = plan.memory_bandwidth_gbps * GB
            changes["host_link_bw"] = plan.memory_bandwidth_gbps * GB / 2
    if plan.host_memory_bandwidth_gbps:
        changes["host_memory_bw"] = plan.host_memory_bandwidth_gbps * GB
    if plan.host_link_gbps:
        changes["host_link_bw"] = plan.host_link_gbps * GB
    if plan.interconnect_gbps:
        bus = plan.interconnect_gbps * GB
        changes.update(allreduce_bw=bus, reduce_scatter_bw=bus, allgather_bw=bus)
    if changes:
        changes["source"] = hw.source + "; declared: " + ", ".join(sorted(changes))
    return dataclasses.replace(hw, **changes)
