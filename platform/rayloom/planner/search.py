"""Search the configurations of a run that fit: ZeRO stage x offload x micro-batch x accumulation (the
global batch kept) x activation checkpointing, ranked by predicted tokens/s; write the best as an
experiment YAML that composes (`experiment=<name>`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.planner.core import Capacity, Plan, detect_capacity, hardware_for, plan_setup, setup_from_config
from rayloom.planner.hardware import Hardware
from rayloom.planner.memory import GiB, Setup
from rayloom.planner.shapes import ModelShape, model_shape


@dataclass
class Candidate:
    plan: Plan

    @property
    def setup(self) -> Setup:
        return self.plan.setup

    def overrides(self) -> dict[str, object]:
        """The config keys that select this configuration (dotted paths)."""
        s = self.setup
        return {"deepspeed.zero_stage": s.zero_stage, "deepspeed.offload_optimizer": s.offload_optimizer,
                "deepspeed.offload_param": s.offload_param, "train.micro_batch_size": s.micro_batch_size,
                "train.global_batch_size": s.global_batch_size,
                "train.gradient_checkpointing": s.gradient_checkpointing}

    def override_args(self) -> str:
        return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.overrides().items())


def _offload_choices(setup: Setup, nvme: bool) -> list[tuple[str, str]]:
    targets = ["none", "cpu"] + (["nvme"] if nvme else [])
    choices = []
    for stage in (0, 1, 2, 3):
        for opt in targets:
            for param in targets:
                if (opt != "none" and stage == 0) or (param != "none" and stage != 3):
                    continue
                if setup.tensor_parallel_size > 1 and (stage > 1 or opt != "none"):
                    continue  # AutoTP: ZeRO 0-1, no offload (rayloom.config.train checks the same)
                choices.append((stage, opt, param))
    return choices


def candidate_setups(setup: Setup, max_micro_batch: int, nvme: bool = False) -> list[Setup]:
    """Every combination that keeps the global batch (micro x accumulation x dp) of `setup`."""
    dp, global_batch = setup.data_parallel_size, setup.global_batch_size
    micros = sorted({b for b in (2**i for i in range(12)) if b <= max_micro_batch} | {setup.micro_batch_size})
    micros = [b for b in micros if global_batch % (b * dp) == 0]
    out = []
    for stage, opt, param in _offload_choices(setup, nvme):
        for micro in micros:
            for checkpointing in (False, True):
                out.append(dataclasses.replace(setup, zero_stage=stage, offload_optimizer=opt, offload_param=param,
                                               micro_batch_size=micro, grad_accum=global_batch // (micro * dp),
                                               gradient_checkpointing=checkpointing))
    return out


def search_setups(shape: ModelShape, setup: Setup, capacity: Capacity, hardware: Hardware, max_micro_batch: int,
                  nvme: bool = False) -> list[Candidate]:
    """The configurations that fit (or whose device capacity is unknown but host fits), fastest first."""
    fitting = []
    for candidate in candidate_setups(setup, max_micro_batch, nvme):
        plan = plan_setup(shape, candidate, capacity, hardware)
        if plan.fits is not False:
            fitting.append(Candidate(plan))
    fitting.sort(key=lambda c: (-c.plan.throughput.tokens_per_s, c.plan.breakdown.device_peak))
    return fitting


def search_configs(cfg: RayloomConfig, *, flops: float | None = None,
                   hardware: Hardware | None = None) -> list[Candidate]:
    """Configurations of this run that fit, ranked by predicted tokens/s (best first). hardware: the rates
    to rank with (default: rayloom.planner.core.hardware_for(cfg, flops))."""
    return search_setups(model_shape(cfg), setup_from_config(cfg), detect_capacity(cfg),
                         hardware or hardware_for(cfg, flops), cfg.plan.max_micro_batch,
                         nvme=bool(cfg.deepspeed.nvme_path))


def experiment_path(cfg: RayloomConfig) -> Path:
    name = cfg.plan.write_name or f"plan_{cfg.train.run_name}"
    return Path(cfg.plan.write_dir).expanduser().resolve() / "experiment" / f"{name}.yaml"


def experiment_yaml(candidate: Candidate, cfg: RayloomConfig) -> str:
    s, plan = candidate.setup, candidate.plan
    capacity = plan.capacity
    device = (f"{capacity.device_bytes / GiB:.1f} GiB" if capacity.device_bytes else "unknown")
    lines = [
        "# @package _global_",
        f"# Written by `rayloom plan` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC for model "
        f"{plan.shape.name} ({plan.shape.num_params / 1e9:.2f}B params), {s.num_workers} worker(s):",
        f"# predicted peak {plan.breakdown.device_peak / GiB:.2f} GiB per device of {device}, host "
        f"{plan.node_peak / GiB:.2f} GiB per node; predicted step {plan.throughput.step_s:.3g} s, ~{plan.throughput.tokens_per_s:,.0f} tokens/s.",
        "deepspeed:",
        f"  zero_stage: {s.zero_stage}",
        f"  offload_optimizer: {s.offload_optimizer}",
        f"  offload_param: {s.offload_param}",
        "train:",
        f"  micro_batch_size: {s.micro_batch_size}",
        f"  global_batch_size: {s.global_batch_size}",
        f"  gradient_checkpointing: {str(s.gradient_checkpointing).lower()}",
    ]
    return "\n".join(lines) + "\n"


def write_experiment(candidate: Candidate, cfg: RayloomConfig) -> Path:
    """Write the configuration as <plan.write_dir>/experiment/<name>.yaml; never replaces a file
    unless plan.overwrite."""
    path = experiment_path(cfg)
    if path.exists() and not cfg.plan.overwrite:
        raise UserError(f"plan: {path} already exists; set plan.overwrite=true to replace it or "
                        "plan.write_name=<another name>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(candidate, cfg))
    return path
