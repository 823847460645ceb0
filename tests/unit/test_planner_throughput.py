"""Each term of the planner's step-time model against values computed by hand for the tiny-2l shape
(vocab 512, hidden 128, MLP 256, 2 layers; 459,392 parameters, 65,536 in the input embedding) on
round-number hardware, and where the hardware rates come from."""

from __future__ import annotations

import dataclasses

import pytest

from rayloom.config import compose
from rayloom.config.plan import DEVICE_KINDS
from rayloom.errors import UserError
from rayloom.planner.hardware import CPU_ROW, GPU_TABLE, Hardware, gpu_kind_from_name, resolve_hardware
from rayloom.planner.memory import Setup
from rayloom.planner.shapes import ModelShape
from rayloom.planner.throughput import predict, step_terms

TINY = ModelShape("tiny-2l", vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2,
                  num_kv_heads=2)
P = 459_392
HW = Hardware(kind="cpu", peak_flops=1e12, compute_efficiency=0.5, half_efficiency_tokens=0, memory_bw=10e9,
              host_memory_bw=20e9, host_link_bw=5e9, allreduce_bw=2e9, reduce_scatter_bw=1e9, allgather_bw=0.5e9)
BASE = Setup(zero_stage=2, precision="fp32", num_workers=2, micro_batch_size=2, seq_len=64, use_gpu=False)


def _terms(setup: Setup, hw: Hardware = HW) -> dict[str, float]:
    return {t.name: t.seconds for t in step_terms(TINY, setup, hw)}


def test_compute_term_is_hardware_flops_over_peak_times_efficiency():
    # 6 FLOPs per dense weight per token (4 forward/input-gradient + 2 weight-gradient) on the
    # 459,392 - 65,536 = 393,856 non-embedding weights, + 12 x layers x hidden x seq for attention.
    per_token = 6 * 393_856 + 12 * 2 * 128 * 64
    assert per_token == 2_559_744
    tokens = 2 * 64  # micro-batch 2 x seq 64, one micro-batch per step
    assert _terms(BASE)["compute"] == pytest.approx(per_token * tokens / (1e12 * 0.5))
    # Activation checkpointing recomputes the forward: + 2 FLOPs per dense weight per token.
    ckpt = _terms(dataclasses.replace(BASE, gradient_checkpointing=True))["compute"]
    assert ckpt == pytest.approx((per_token + 2 * 393_856) * tokens / 0.5e12)
    # Accumulation multiplies the tokens of a step.
    assert _terms(dataclasses.replace(BASE, grad_accum=4))["compute"] == pytest.approx(4 * per_token * tokens / 0.5e12)
    # A small-micro-batch penalty where the hardware has one: x tokens / (tokens + half).
    small = dataclasses.replace(HW, half_efficiency_tokens=128)
    assert _terms(BASE, small)["compute"] == pytest.approx(per_token * tokens / (1e12 * 0.5 * 128 / 256))


def test_optimizer_term_by_zero_stage_and_implementation():
    # CPU without offload: torch's single-tensor AdamW, 20 passes x 4 B per updated parameter.
    zero0 = _terms(dataclasses.replace(BASE, zero_stage=0))
    assert zero0["optimizer step (torch AdamW (single-tensor), device)"] == pytest.approx(20 * 4 * P / 10e9)
    assert "ZeRO fp32 partition copies" not in zero0  # fp32 ZeRO-0 steps the model's own tensors
    # ZeRO 1-3 update 1/dp of the parameters, plus 4 passes of ZeRO's partition copies.
    zero2 = _terms(BASE)
    assert zero2["optimizer step (torch AdamW (single-tensor), device)"] == pytest.approx(20 * 4 * (P / 2) / 10e9)
    assert zero2["ZeRO fp32 partition copies"] == pytest.approx(4 * 4 * (P / 2) / 10e9)
    # bf16 ZeRO-0 keeps an fp32 master: the copies come back, on all parameters.
    bf16 = _terms(dataclasses.replace(BASE, zero_stage=0, precision="bf16"))
    assert bf16["ZeRO fp32 partition copies"] == pytest.approx(4 * 4 * P / 10e9)
    # A GPU without offload runs FusedAdam: 7 passes.
    gpu = _terms(dataclasses.replace(BASE, use_gpu=True))
    assert gpu["optimizer step (FusedAdam, device)"] == pytest.approx(7 * 4 * (P / 2) / 10e9)
    # Optimizer offload: DeepSpeedCPUAdam, 7 passes, at the host's memory bandwidth; no device copies.
    offload = _terms(dataclasses.replace(BASE, offload_optimizer="cpu"))
    assert offload["optimizer step (DeepSpeedCPUAdam, host)"] == pytest.approx(7 * 4 * (P / 2) / 20e9)
    assert "ZeRO fp32 partition copies" not in offload


def test_collective_terms_by_zero_stage():
    half = 4 * P / 2  # fp32 bytes x (dp - 1) / dp with dp = 2
    zero0 = _terms(dataclasses.replace(BASE, zero_stage=0))
    assert zero0["all-reduce gradients"] == pytest.approx(2 * half / 2e9)
    zero1 = _terms(dataclasses.replace(BASE, zero_stage=1, grad_accum=4))
    assert zero1["reduce-scatter gradients"] == pytest.approx(half / 1e9)  # once per step under ZeRO-1
    assert zero1["all-gather updated partitions"] == pytest.approx(half / 0.5e9)
    zero2 = _terms(dataclasses.replace(BASE, grad_accum=4))
    assert zero2["reduce-scatter gradients"] == pytest.approx(4 * half / 1e9)  # every micro-batch
    zero3 = _terms(dataclasses.replace(BASE, zero_stage=3, grad_accum=4))
    assert zero3["ZeRO-3 parameter all-gathers"] == pytest.approx(2 * 4 * half / 0.5e9)  # forward + backward
    assert "all-gather updated partitions" not in zero3
    # bf16 halves the bytes; one worker has nothing to communicate.
    bf16 = _terms(dataclasses.replace(BASE, zero_stage=0, precision="bf16"))
    assert bf16["all-reduce gradients"] == pytest.approx(2 * (2 * P / 2) / 2e9)
    single = _terms(dataclasses.replace(BASE, num_workers=1))
    assert not any("gather" in n or "reduce" in n for n in single)


def test_offload_transfer_terms():
    offload = _terms(dataclasses.replace(BASE, offload_optimizer="cpu", grad_accum=2))
    # fp32 gradients to the host every micro-batch (2 x 4 B), fp32 weights back once (4 B), per parameter.
    assert offload["offload: gradients to host, weights back"] == pytest.approx((2 * 4 + 4) * (P / 2) / 5e9)
    assert offload["offload: gradient norm and inf/nan checks"] == pytest.approx(3 * 4 * (P / 2) / 20e9)
    params = _terms(dataclasses.replace(BASE, zero_stage=3, offload_optimizer="cpu", offload_param="cpu"))
    # Each rank's parameter partition comes to the device for the forward and again for the backward.
    assert params["offload: parameter partitions to the device"] == pytest.approx(2 * (4 * P / 2) / 5e9)
    nvme = _terms(dataclasses.replace(BASE, offload_optimizer="nvme"))
    assert nvme["NVMe optimizer swap"] == pytest.approx(2 * 12 * (P / 2) / 6e9)


def test_tokens_per_s_is_data_parallel_tokens_over_the_summed_step():
    setup = dataclasses.replace(BASE, grad_accum=3)
    t = predict(TINY, setup, HW)
    assert t.step_s == pytest.approx(sum(_terms(setup).values()))
    assert t.tokens_per_s == pytest.approx(2 * 3 * 2 * 64 / t.step_s)
    assert t.tokens_per_s_per_worker == pytest.approx(t.tokens_per_s / 2)
    assert 0 < t.mfu < HW.compute_efficiency
    # Preference objectives run chosen + rejected rows: twice the tokens per micro-batch.
    pref = predict(TINY, dataclasses.replace(BASE, preference=True), HW)
    assert pref.tokens_per_s * pref.step_s == pytest.approx(2 * 2 * 2 * 64)


def test_hardware_rows_and_declarations():
    cpu = resolve_hardware(compose("train", []), measure=False)
    assert cpu.kind == "cpu" and cpu.peak_flops == CPU_ROW["fp32"] and cpu.allgather_bw == CPU_ROW["allgather_bw"]
    assert cpu.host_link_bw == cpu.memory_bw / 2  # a copy reads and writes the same RAM
    declared = resolve_hardware(compose("train", ["plan.memory_bandwidth_gbps=20", "plan.interconnect_gbps=3",
                                                  "plan.compute_efficiency=0.4", "plan.peak_tflops=2"]), measure=False)
    assert declared.memory_bw == 20e9 and declared.host_link_bw == 10e9 and declared.compute_efficiency == 0.4
    assert declared.allreduce_bw == declared.reduce_scatter_bw == declared.allgather_bw == 3e9
    assert declared.peak_flops == 2e12 and "declared" in declared.source
    h100 = resolve_hardware(compose("train", ["plan=h100_80gb", "train.use_gpu=true", "deepspeed.precision=bf16"]),
                            measure=False)
    assert h100.kind == "h100" and h100.memory_bw == GPU_TABLE["h100"]["memory_bw"] and h100.peak_flops == 989.4e12
    with pytest.raises(UserError, match="plan.device_kind"):
        resolve_hardware(compose("train", ["plan.device_kind=h100"]), measure=False)
    with pytest.raises(UserError, match="plan.device_kind"):
        compose("train", ["plan.device_kind=tpu"])
    assert tuple(GPU_TABLE) == DEVICE_KINDS[2:] and DEVICE_KINDS[:2] == ("", "cpu")


def test_gpu_names_map_to_table_rows():
    assert gpu_kind_from_name("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_kind_from_name("NVIDIA H200") == "h200"
    assert gpu_kind_from_name("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_kind_from_name("NVIDIA A10G") == "a10g"
    assert gpu_kind_from_name("NVIDIA L4") == "l4"
    assert gpu_kind_from_name("Tesla T4") is None


def test_on_nvlink_gpus_zero3_and_offload_cost_time():
    hw = resolve_hardware(compose("train", ["plan=h100_80gb", "train.use_gpu=true", "deepspeed.precision=bf16"]),
                          measure=False)
    from rayloom.planner.shapes import KNOWN

    base = Setup(zero_stage=2, precision="bf16", num_workers=8, micro_batch_size=1, grad_accum=8, seq_len=4096,
                 use_gpu=True)
    shape = KNOWN["llama-3.1-8b"]
    zero2 = predict(shape, base, hw).step_s
    assert predict(shape, dataclasses.replace(base, zero_stage=3), hw).step_s > zero2
    assert predict(shape, dataclasses.replace(base, offload_optimizer="cpu"), hw).step_s > zero2
