"""Predicted tokens/s from a step-time model: one optimizer step of one worker is

    compute + optimizer + communication + host transfers   (seconds; no overlap assumed)

* compute: hardware FLOPs of the step / (peak FLOP/s x compute efficiency). FLOPs per token are
  rayloom.train.metrics.flops_per_token (what the trainer's MFU counts); activation checkpointing and
  a DPO reference forward add 2 FLOPs per weight per token.
* optimizer: the bytes the optimizer reads and writes / the bandwidth of the memory it runs in.
  Which optimizer DeepSpeed builds follows rayloom.train.ds_config and DeepSpeed's
  `get_optimizer_configuration` (engine.py): optimizer offload -> DeepSpeedCPUAdam on the host; a GPU
  without offload -> FusedAdam; a CPU run without offload -> torch's AdamW (rayloom sets torch_adam).
  ZeRO-0 updates every parameter on every rank, ZeRO 1-3 1/dp of them, plus ZeRO's own copies
  (gradients into the fp32 partition, the partition back into the working weights).
* communication: collective bytes per rank (bus-bandwidth convention) / the collective's bandwidth:
  ZeRO-0 all-reduces gradients once per step; ZeRO-1 reduce-scatters them once per step and all-gathers
  the updated partitions; ZeRO-2 reduce-scatters every micro-batch; ZeRO-3 also all-gathers every
  parameter in the forward and again in the backward of every micro-batch.
* host transfers: with offload, gradients to the host and parameters back over the host link
  (on a CPU "device" a memory copy), NVMe swaps at an assumed drive rate.

Hardware rates come from rayloom.planner.hardware (datasheet rows, the measured CPU row, plan.*
declarations). Not modelled: overlap of communication with compute (DeepSpeed's overlap_comm on GPUs;
the sum is then an upper bound), multi-node networks (declare plan.interconnect_gbps), tensor
parallelism's own all-reduces, Python and hook overheads.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.planner.hardware import Hardware
from rayloom.planner.memory import Setup, trainable_params
from rayloom.planner.shapes import ModelShape
from rayloom.train.metrics import flops_per_token

# Passes over an optimizer-state-sized fp32 tensor (4 B each) per updated parameter:
# torch's single-tensor AdamW (torch/optim/adam.py `_single_tensor_adam`; foreach kernels exist only
# for cuda/xpu/mtia, so CPU tensors take this path): weight decay param.mul_ (read + write 2),
# exp_avg.lerp_(grad) (3), exp_avg_sq.mul_ (2) and .addcmul_(grad, grad) (3), sqrt (2), / bias
# correction (2, a new tensor), .add_(eps) (2), param.addcdiv_ (4) = 20.
# FusedAdam (one CUDA kernel) and DeepSpeedCPUAdam (one SIMD loop): read p, g, m, v, write p, m, v = 7.
OPTIMIZER_PASSES = {"torch AdamW (single-tensor)": 20, "FusedAdam": 7, "DeepSpeedCPUAdam": 7}
# ZeRO's copies around the update (deepspeed/runtime/zero/stage_1_and_2.py step, stage3.py; bf16
# ZeRO-0: BF16_Optimizer): the reduced gradient into the fp32 gradient partition (read + write) and
# the updated fp32 partition back into the working weights (read + write) = 4 passes.
ZERO_COPY_PASSES = 4
# DeepSpeed's optimizer-offload path computes each gradient partition's norm and an inf/nan check on
# the host (stage_1_and_2.copy_grads_in_partition): ~3 passes over the fp32 partition.
OFFLOAD_CHECK_PASSES = 3
# NVMe offload: one data-centre NVMe drive per worker, ~6 GB/s (assumption; PCIe Gen4 drives are
# rated ~7 GB/s read, less write).
NVME_BW = 6e9


@dataclass(frozen=True)
class StepTerm:
    name: str
    seconds: float
    formula: str


@dataclass(frozen=True)
class Throughput:
    flops_per_token: float          # model FLOPs (what MFU counts)
    hardware_flops_per_token: float  # + the recomputed forward under activation checkpointing
    efficiency: float               # compute efficiency used (x the small-micro-batch factor)
    peak_flops_per_worker: float
    tokens_per_s: float             # all workers together
    tokens_per_s_per_worker: float
    step_s: float = 0.0
    terms: tuple[StepTerm, ...] = ()
    optimizer: str = ""
    hardware: str = ""

    @property
    def mfu(self) -> float:
        """Predicted model-FLOPs utilisation of one worker (communication and the optimizer included)."""
        if not self.peak_flops_per_worker:
            return 0.0
        return self.flops_per_token * self.tokens_per_s_per_worker / self.peak_flops_per_worker


def model_flops_per_token(shape: ModelShape, setup: Setup) -> float:
    trainable = trainable_params(shape, setup)
    total = shape.num_params + (trainable if setup.peft_method != "none" else 0)
    return flops_per_token(total, trainable, shape.embedding_params, shape.num_layers, shape.hidden_size,
                           setup.seq_len)


def hardware_flops_per_token(shape: ModelShape, setup: Setup) -> float:
    hardware = model_flops_per_token(shape, setup)
    dense = shape.num_params - shape.embedding_params
    if setup.gradient_checkpointing:
        hardware += 2.0 * dense  # one more forward of every weight
    if setup.uses_reference:
        hardware += 2.0 * dense  # the reference's forward
    return hardware


def optimizer_impl(setup: Setup) -> str:
    """The optimizer DeepSpeed runs for this setup with rayloom's DeepSpeed config."""
    if setup.offload_optimizer != "none":
        return "DeepSpeedCPUAdam"
    return "FusedAdam" if setup.use_gpu else "torch AdamW (single-tensor)"


def tokens_per_worker_step(setup: Setup) -> int:
    """Tokens one data-parallel rank processes per optimizer step (preference: chosen + rejected rows)."""
    rows = setup.micro_batch_size * (2 if setup.preference else 1)
    return rows * setup.seq_len * setup.grad_accum


def compute_efficiency(setup: Setup, hw: Hardware) -> float:
    tokens = setup.micro_batch_size * setup.seq_len * (2 if setup.preference else 1)
    if not hw.half_efficiency_tokens:
        return hw.compute_efficiency
    return hw.compute_efficiency * tokens / (tokens + hw.half_efficiency_tokens)


def step_terms(shape: ModelShape, setup: Setup, hw: Hardware) -> list[StepTerm]:
    """The seconds of one optimizer step of one worker, term by term."""
    tp, dp, w, accum = setup.tensor_parallel_size, setup.data_parallel_size, setup.w, setup.grad_accum
    trainable = trainable_params(shape, setup) / tp
    params = (shape.num_params + (trainable * tp if setup.peft_method != "none" else 0)) / tp
    terms = []
    flops = hardware_flops_per_token(shape, setup) * tokens_per_worker_step(setup) / tp
    eff = compute_efficiency(setup, hw)
    terms.append(StepTerm("compute", flops / (hw.peak_flops * eff),
                          f"{flops / 1e9:,.1f} GFLOP / ({hw.peak_flops / 1e12:.3g} TFLOP/s x {eff:.2f})"))

    # Optimizer: ZeRO-0 updates everything on every rank, ZeRO 1-3 their 1/dp partition.
    updated = trainable / (dp if setup.zero_stage >= 1 else 1)
    impl = optimizer_impl(setup)
    on_host = setup.offload_optimizer != "none"
    bw = hw.host_memory_bw if on_host else hw.memory_bw
    nbytes = OPTIMIZER_PASSES[impl] * 4 * updated
    terms.append(StepTerm(f"optimizer step ({impl}, {'host' if on_host else 'device'})", nbytes / bw,
                          f"{OPTIMIZER_PASSES[impl]} passes x 4 B x {updated / 1e6:,.2f}M / {bw / 1e9:.3g} GB/s"))
    if not on_host and (setup.zero_stage >= 1 or setup.precision != "fp32"):
        nbytes = ZERO_COPY_PASSES * 4 * updated
        terms.append(StepTerm("ZeRO fp32 partition copies", nbytes / hw.memory_bw,
                              f"{ZERO_COPY_PASSES} passes x 4 B x {updated / 1e6:,.2f}M / {hw.memory_bw / 1e9:.3g} GB/s"))

    # Collectives: bytes per rank in the bus-bandwidth convention.
    if dp > 1:
        share = (dp - 1) / dp
        grads, weights = w * trainable * share, w * params * share
        if setup.zero_stage == 0:
            terms.append(StepTerm("all-reduce gradients", 2 * grads / hw.allreduce_bw,
                                  f"2 x {grads / 1e6:,.1f} MB / {hw.allreduce_bw / 1e9:.3g} GB/s"))
        else:
            scatters = accum if setup.zero_stage >= 2 else 1
            terms.append(StepTerm("reduce-scatter gradients", scatters * grads / hw.reduce_scatter_bw,
                                  f"{scatters} x {grads / 1e6:,.1f} MB / {hw.reduce_scatter_bw / 1e9:.3g} GB/s"))
        if setup.zero_stage in (1, 2):
            terms.append(StepTerm("all-gather updated partitions", grads / hw.allgather_bw,
                                  f"{grads / 1e6:,.1f} MB / {hw.allgather_bw / 1e9:.3g} GB/s"))
        if setup.zero_stage == 3:
            gathers = accum * (2 + (1 if setup.uses_reference and setup.reference_copy else 0))
            terms.append(StepTerm("ZeRO-3 parameter all-gathers", gathers * weights / hw.allgather_bw,
                                  f"{gathers} x {weights / 1e6:,.1f} MB / {hw.allgather_bw / 1e9:.3g} GB/s"))

    # Offload: over the host link (a memory copy on a CPU device), NVMe at the drive's rate.
    if on_host:
        to_host = accum * 4 * updated + w * updated  # fp32 gradients out every micro-batch, weights back
        terms.append(StepTerm("offload: gradients to host, weights back", to_host / hw.host_link_bw,
                              f"({accum} x 4 B + {w} B) x {updated / 1e6:,.2f}M / {hw.host_link_bw / 1e9:.3g} GB/s"))
        checks = OFFLOAD_CHECK_PASSES * 4 * updated
        terms.append(StepTerm("offload: gradient norm and inf/nan checks", checks / hw.host_memory_bw,
                              f"{OFFLOAD_CHECK_PASSES} passes x 4 B x {updated / 1e6:,.2f}M / "
                              f"{hw.host_memory_bw / 1e9:.3g} GB/s"))
        if setup.offload_optimizer == "nvme":
            swap = 2 * 12 * updated  # fp32 master, m, v read and written back
            terms.append(StepTerm("NVMe optimizer swap", swap / NVME_BW,
                                  f"2 x 12 B x {updated / 1e6:,.2f}M / {NVME_BW / 1e9:.3g} GB/s (assumed)"))
    if setup.offload_param != "none":
        fetches = accum * (2 + (1 if setup.uses_reference and setup.reference_copy else 0))
        partition = w * params / dp
        bw = NVME_BW if setup.offload_param == "nvme" else hw.host_link_bw
        terms.append(StepTerm("offload: parameter partitions to the device", fetches * partition / bw,
                              f"{fetches} x {partition / 1e6:,.1f} MB / {bw / 1e9:.3g} GB/s"))
    return terms


def predict(shape: ModelShape, setup: Setup, hw: Hardware) -> Throughput:
    """Tokens/s of the run from the step time of one worker."""
    terms = step_terms(shape, setup, hw)
    step_s = sum(t.seconds for t in terms)
    tokens_per_s = setup.data_parallel_size * tokens_per_worker_step(setup) / step_s
    return Throughput(model_flops_per_token(shape, setup), hardware_flops_per_token(shape, setup),
                      compute_efficiency(setup, hw), hw.peak_flops, tokens_per_s, tokens_per_s / setup.num_workers,
                      step_s, tuple(terms), optimizer_impl(setup), hw.source)
