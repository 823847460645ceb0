"""Predicted tokens/s: model FLOPs per token against a FLOP/s ceiling and a stated efficiency.

FLOPs per token are rayloom.train.metrics.flops_per_token (the same number the trainer's MFU uses).
The efficiency factors below are assumptions, not measurements: typical model-FLOPs utilisation of
dense Llama training under DeepSpeed on current GPUs, reduced for communication (higher ZeRO
stages), for optimizer/parameter traffic over PCIe (offload) and for small micro-batches.
Activation checkpointing runs each forward twice: the hardware does 2 more FLOPs per weight per
token than the model FLOPs count. They rank configurations; calibrate with a measured run.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.planner.memory import Setup, trainable_params
from rayloom.planner.shapes import ModelShape
from rayloom.train.metrics import flops_per_token

# Fraction of the FLOP/s ceiling a step reaches, by ZeRO stage (stated assumption).
STAGE_EFFICIENCY = {0: 0.50, 1: 0.48, 2: 0.45, 3: 0.38}
# Multipliers for offloading to the host (stated assumption): the optimizer step / parameter
# gathers then cross PCIe or hit NVMe.
OFFLOAD_OPTIMIZER_EFFICIENCY = {"none": 1.0, "cpu": 0.7, "nvme": 0.4}
OFFLOAD_PARAM_EFFICIENCY = {"none": 1.0, "cpu": 0.6, "nvme": 0.35}
# Tokens per micro-batch at which a step reaches half of its large-batch efficiency beyond this
# size (a saturating penalty for small matmuls): eff *= tokens / (tokens + SMALL_BATCH_TOKENS).
SMALL_BATCH_TOKENS = 512


@dataclass(frozen=True)
class Throughput:
    flops_per_token: float          # model FLOPs (what MFU counts)
    hardware_flops_per_token: float  # + the recomputed forward under activation checkpointing
    efficiency: float
    peak_flops_per_worker: float    # 0 when unknown: tokens_per_s is then relative only
    tokens_per_s: float             # all workers together
    tokens_per_s_per_worker: float


def model_flops_per_token(shape: ModelShape, setup: Setup) -> float:
    trainable = trainable_params(shape, setup)
    total = shape.num_params + (trainable if setup.peft_method != "none" else 0)
    return flops_per_token(total, trainable, shape.embedding_params, shape.num_layers, shape.hidden_size,
                           setup.seq_len)


def efficiency(setup: Setup) -> float:
    tokens = setup.micro_batch_size * setup.seq_len * (2 if setup.preference else 1)
    eff = STAGE_EFFICIENCY[setup.zero_stage]
    eff *= OFFLOAD_OPTIMIZER_EFFICIENCY[setup.offload_optimizer] * OFFLOAD_PARAM_EFFICIENCY[setup.offload_param]
    return eff * tokens / (tokens + SMALL_BATCH_TOKENS)


def predict(shape: ModelShape, setup: Setup, peak_flops_per_worker: float) -> Throughput:
    """Tokens/s of the run; with an unknown ceiling (0) it is computed against 1 FLOP/s, for ranking."""
    model = model_flops_per_token(shape, setup)
    hardware = model
    if setup.gradient_checkpointing:
        hardware += 2.0 * (shape.num_params - shape.embedding_params)  # one more forward of every weight
    if setup.uses_reference:
        hardware += 2.0 * (shape.num_params - shape.embedding_params)  # the reference's forward
    eff = efficiency(setup)
    ceiling = peak_flops_per_worker or 1.0
    per_worker = ceiling * eff / hardware
    return Throughput(model, hardware, eff, peak_flops_per_worker, per_worker * setup.num_workers, per_worker)
