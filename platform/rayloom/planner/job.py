"""`rayloom plan train [overrides]`, the training preflight and the tune-trial check."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.planner.core import Plan, detect_capacity, hardware_for, plan_run, plan_setup, setup_from_config
from rayloom.planner.memory import GiB
from rayloom.planner.report import format_plan, format_search
from rayloom.planner.search import Candidate, search_configs, write_experiment
from rayloom.planner.shapes import model_shape

log = logging.getLogger(__name__)

DESCRIPTION = """Predict the per-worker memory (device and host, term by term) and tokens/s of the configured
training run, against the detected or declared capacity (plan.device_memory_gb, plan.host_memory_gb).
plan.search=true lists the configurations that fit (ZeRO stage, offload, micro-batch, accumulation,
activation checkpointing) ranked by predicted throughput and writes the best as an experiment YAML
(plan.write_dir, plan.write_name, plan.overwrite). Exit status: 0 fits, 1 does not fit. See docs/planning.md."""


@dataclass
class PlanResult:
    plan: Plan
    candidates: list[Candidate] = field(default_factory=list)
    written: Path | None = None


def run_plan_job(cfg: RayloomConfig) -> PlanResult:
    """Print the plan (and with plan.search the ranked configurations that fit); write the best."""
    hardware = hardware_for(cfg)
    plan = plan_setup(model_shape(cfg), setup_from_config(cfg), detect_capacity(cfg), hardware)
    print(format_plan(plan))
    result = PlanResult(plan)
    if not cfg.plan.search:
        return result
    result.candidates = search_configs(cfg, hardware=hardware)
    print()
    print(format_search(result.candidates, cfg.plan.top_k))
    if result.candidates and cfg.plan.write_best:
        result.written = write_experiment(result.candidates[0], cfg)
        print(f"\nwrote {result.written}\n  use it: rayloom train hydra.searchpath=[file://{result.written.parent.parent}] "
              f"experiment={result.written.stem}\n  (or copy it into conf/experiment/ and pass "
              f"experiment={result.written.stem})")
    return result


def add_plan_command(commands) -> argparse.ArgumentParser:
    """Add `rayloom plan [train|tune] [overrides]` to the rayloom CLI's sub-commands (rayloom.cli builds the tree)."""
    parser = commands.add_parser(
        "plan", help="predict a training run's memory and tokens/s before launch; find configurations that fit",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  rayloom plan train model=hf model.path=/models/llama-8b plan=h100_80gb train.num_workers=8\n"
               "  rayloom plan train plan.search=true plan.device_memory_gb=24")
    parser.add_argument("overrides", nargs="*", default=(), metavar="[train|tune] override",
                        help="the job to plan (default train) and its Hydra overrides")
    parser.set_defaults(run=_run_plan)
    return parser


def _run_plan(args: argparse.Namespace) -> int:
    from rayloom.config import compose

    argv = list(args.overrides)
    job = "train"
    if argv and argv[0] in ("train", "tune"):
        job, argv = argv[0], argv[1:]
    elif argv and "=" not in argv[0]:
        raise UserError(f"rayloom plan: unknown job {argv[0]!r}; plan the training run: rayloom plan train [overrides]")
    result = run_plan_job(compose(job, argv))
    if result.plan.fits is not False:
        return 0
    return 0 if result.candidates else 1


def plan_main(argv: list[str]) -> int:
    """`rayloom plan ARGV...` from an argv list (tests, scripts): 0 when the run (or, with plan.search,
    some configuration) fits, 1 when it does not; usage mistakes raise UserError / exit 2."""
    parser = argparse.ArgumentParser(prog="rayloom")
    add_plan_command(parser.add_subparsers())
    try:
        args = parser.parse_args(["plan", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return _run_plan(args)


def _largest_terms(plan: Plan, count: int = 3) -> str:
    terms = sorted(plan.breakdown.terms, key=lambda t: t.device + t.host, reverse=True)[:count]
    return ", ".join(f"{t.name} {(t.device + t.host) / GiB:.2f} GiB" for t in terms)


def check_fits(cfg: RayloomConfig) -> tuple[bool, str]:
    """(False, why) when the run is predicted not to fit, with the numbers and a suggested change;
    (True, "") when it fits or a capacity is unknown. No FLOP/s probe runs. For `rayloom tune` (skip a
    trial) and the training preflight."""
    plan = plan_run(cfg, flops=0.0)
    if plan.fits is not False:
        return True, ""
    message = (f"the run is predicted not to fit ({'; '.join(plan.problems)}); largest terms per worker: "
               f"{_largest_terms(plan)}.")
    candidates = search_configs(cfg, flops=0.0)
    if candidates:
        best = candidates[0]
        message += (f" Suggested change (predicted {best.plan.breakdown.device_peak / GiB:.2f} GiB per device, "
                    f"{best.plan.node_peak / GiB:.2f} GiB host per node): {best.override_args()}"
                    " (`rayloom plan train plan.search=true ...` ranks all that fit).")
    else:
        message += (" No ZeRO stage / offload / micro-batch / checkpointing setting fits: add workers (ZeRO-3 "
                    "partitions by data-parallel size), use peft=lora or qlora, a shorter data.seq_len, or larger "
                    "devices.")
    return False, message


def preflight(cfg: RayloomConfig) -> None:
    """Refuse, before any worker starts, a run predicted not to fit (plan.preflight, default on).

    Raises UserError with the numbers and a suggested change; logs a warning (or raises, with
    plan.on_unknown_capacity=error) when the device capacity cannot be known here."""
    if not cfg.plan.preflight:
        return
    plan = plan_run(cfg, flops=0.0)
    if plan.fits is None:
        message = ("preflight: cannot check device memory (a GPU run planned from a machine without that GPU); "
                   "declare plan.device_memory_gb to check it")
        if cfg.plan.on_unknown_capacity == "error":
            raise UserError(message)
        log.warning(message)
        return
    fits, why = check_fits(cfg) if plan.fits is False else (True, "")
    if not fits:
        raise UserError(f"preflight: {why} Set plan.preflight=false to start anyway.")
    log.info("preflight: predicted peak %.2f GiB per worker (device), %.2f GiB host per node: fits",
             plan.breakdown.device_peak / GiB, plan.node_peak / GiB)
