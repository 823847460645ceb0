"""The planner's search keeps only configurations that fit, ranks them, writes a composable experiment;
the preflight refuses a run that cannot fit, naming the numbers."""

from __future__ import annotations

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.planner import check_fits, plan_main, plan_run, preflight, run_plan_job, search_configs
from rayloom.planner.memory import GiB

# An 8B model on 8 declared 80 GiB GPUs, fp32/bf16 arithmetic only (no GPU needed: capacities are declared).
GPU_8B = ["plan.shape=llama-3.1-8b", "train.use_gpu=true", "train.num_workers=8", "plan.device_memory_gb=80",
          "plan.host_memory_gb=1024", "plan.peak_tflops=900", "deepspeed.precision=bf16", "data.seq_len=4096",
          "train.micro_batch_size=1", "train.global_batch_size=64"]


def test_search_returns_only_fitting_configs_ranked_by_tokens_per_s():
    cfg = compose("train", GPU_8B)
    candidates = search_configs(cfg)
    assert candidates
    usable = 80 * GiB * (1 - cfg.plan.headroom)
    for c in candidates:
        assert c.plan.fits is True
        assert c.plan.breakdown.device_peak <= usable
        assert c.setup.global_batch_size == 64  # accumulation changes, the global batch does not
    rates = [c.plan.throughput.tokens_per_s for c in candidates]
    assert rates == sorted(rates, reverse=True)
    # Something was excluded for not fitting: micro-batch 64 without checkpointing at seq 4096.
    assert not any(c.setup.micro_batch_size == 64 and not c.setup.gradient_checkpointing for c in candidates)


def test_offload_needs_host_memory_the_search_respects():
    small_host = compose("train", [*GPU_8B, "plan.host_memory_gb=16"])
    assert all(c.setup.offload_optimizer == "none" for c in search_configs(small_host))
    big_host = compose("train", GPU_8B)
    assert any(c.setup.offload_optimizer == "cpu" for c in search_configs(big_host))


def test_best_config_written_as_experiment_that_composes(tmp_path, capsys):
    cfg = compose("train", [*GPU_8B, "plan.search=true", f"plan.write_dir={tmp_path}", "plan.write_name=best8b"])
    result = run_plan_job(cfg)
    assert result.written == tmp_path / "experiment" / "best8b.yaml"
    best = result.candidates[0]
    composed = compose("train", [f"hydra.searchpath=[file://{tmp_path}]", "experiment=best8b", *GPU_8B[:3]])
    for key, value in best.overrides().items():
        group, name = key.split(".")
        assert getattr(getattr(composed, group), name) == value, key
    assert "configuration(s) fit" in capsys.readouterr().out
    # Never replaced without plan.overwrite ...
    with pytest.raises(UserError, match="plan.overwrite"):
        run_plan_job(cfg)
    # ... and replaced with it.
    again = compose("train", [*GPU_8B, "plan.search=true", f"plan.write_dir={tmp_path}", "plan.write_name=best8b",
                              "plan.overwrite=true"])
    assert run_plan_job(again).written == result.written


def test_preflight_refuses_70b_on_a_24_gb_gpu_with_the_numbers():
    cfg = compose("train", ["plan.shape=llama-3.1-70b", "train.use_gpu=true", "train.num_workers=1",
                            "plan.device_memory_gb=24", "plan.host_memory_gb=64", "deepspeed.precision=bf16"])
    with pytest.raises(UserError) as err:
        preflight(cfg)
    message = str(err.value)
    assert "GiB per worker > 21.60 GiB usable of 24.00 GiB" in message
    assert "optimizer states (Adam m, v) 525.67 GiB" in message  # 8 B x 70.55B params
    assert "plan.preflight=false" in message
    # The preflight can be turned off.
    preflight(compose("train", ["plan.shape=llama-3.1-70b", "train.use_gpu=true", "train.num_workers=1",
                                "plan.device_memory_gb=24", "plan.preflight=false"]))


def test_preflight_suggests_a_change_that_fits():
    # 8B on 8 x 80 GiB at micro-batch 8, seq 4096, no checkpointing: too big; checkpointing / smaller micro fits.
    cfg = compose("train", [*GPU_8B[:-2], "train.micro_batch_size=8", "train.global_batch_size=64"])
    fits, why = check_fits(cfg)
    assert not fits
    assert "Suggested change" in why and "deepspeed.zero_stage=" in why
    suggestion = dict(kv.split("=") for kv in why.split("Suggested change")[1].split(": ", 1)[1].split(" (")[0].split())
    fixed = compose("train", [*GPU_8B[:-2], *(f"{k}={v}" for k, v in suggestion.items())])
    assert plan_run(fixed, flops=0.0).fits is True


def test_preflight_passes_the_tiny_cpu_run_and_says_the_device_is_host_ram():
    cfg = compose("train", [])
    preflight(cfg)
    plan = plan_run(cfg, flops=1e9)
    assert plan.capacity.device_is_host and plan.fits is True
    assert "device = host RAM" in plan.capacity.device_source


def test_unknown_gpu_capacity_warns_or_errors():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: its memory is detected")
    overrides = ["train.use_gpu=true", "plan.shape=llama-3.1-8b"]
    preflight(compose("train", overrides))  # warns
    with pytest.raises(UserError, match="plan.device_memory_gb"):
        preflight(compose("train", [*overrides, "plan.on_unknown_capacity=error"]))


def test_plan_main_exit_codes(capsys):
    assert plan_main(["--help"]) == 0
    assert plan_main(["train", "plan.peak_tflops=1"]) == 0
    assert plan_main(["train", "plan.shape=llama-3.1-70b", "plan.peak_tflops=1", "train.num_workers=1"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown job"):
        plan_main(["serve"])


def test_plan_config_is_validated_at_compose_time():
    with pytest.raises(UserError, match="plan.headroom"):
        compose("train", ["plan.headroom=1.5"])
    with pytest.raises(UserError, match="plan.shape"):
        compose("train", ["plan.shape=gpt-5"])
