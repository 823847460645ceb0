"""The one table of jobs, shared by the CLI (`rayloom <job>`) and the jobs/*.py entrypoints.

Every job takes one typed `RayloomConfig` composed from conf/<job>.yaml + overrides and calls one
library function. The names are those of rayloom.config.JOBS, the primary configs that compose
accepts (a unit test keeps the two equal). The tool commands (chat, submit, jobs, cluster, export)
take their own arguments; rayloom.cli adds them to its parser tree. The library packages keep
their heavy imports (Ray, torch, vLLM, DeepSpeed) inside functions, so importing them all here
stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

import rayloom.align  # noqa: F401  (registers the alignment objectives: dpo, ipo, orpo, safety_sft)
from rayloom.config import RayloomConfig, conf_dir, register_schemas, to_typed
from rayloom.data import run_data_job
from rayloom.errors import UserError
from rayloom.eval import run_eval_job
from rayloom.log_setup import configure_logging
from rayloom.planner import preflight
from rayloom.recipes import run_demo
from rayloom.serve import run_serve_job
from rayloom.train import run_train_job
from rayloom.tune import run_tune_job


@dataclass(frozen=True)
class Job:
    help: str
    run: Callable[[RayloomConfig], Any]


def _train_after_preflight(cfg: RayloomConfig) -> Any:
    """`rayloom train` (and `rayloom submit train`, jobs/train.py): the planner refuses, before any
    worker starts, a run predicted not to fit (plan.preflight, default on; docs/planning.md). Here in
    the command layer because rayloom.planner builds on rayloom.train, not the other way round."""
    preflight(cfg)
    return run_train_job(cfg)


JOBS: dict[str, Job] = {
    "run": Job("the main job: build the tiny model and run every stage (data, train, align, eval, serve)", run_demo),
    "data": Job("prepare data with Ray Data: read, clean, dedup, tokenize, pack, write shards", run_data_job),
    "train": Job("train with Ray Train + DeepSpeed ZeRO (pre-training, SFT, LoRA, alignment)", _train_after_preflight),
    "tune": Job("sweep hyperparameters with Ray Tune over real training runs", run_tune_job),
    "eval": Job("evaluate a checkpoint or endpoint: metrics, safety probes, report, deploy gate", run_eval_job),
    "serve": Job("serve a model with Ray Serve + vLLM behind an OpenAI-compatible endpoint (a rollout when the app "
                 "runs already; operate it with `rayloom serve status|publish|unpublish|promote|rollback`)",
                 run_serve_job),
}


def run_job(job: str, cfg: RayloomConfig) -> Any:
    return JOBS[job].run(cfg)


def run_job_or_exit(job: str, cfg: RayloomConfig) -> Any:
    """For jobs/*.py: a user mistake ends the process with exit code 2 and no traceback."""
    try:
        return run_job(job, cfg)
    except UserError as exc:
        print(f"rayloom {job}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def hydra_entrypoint(job: str) -> Callable[[], None]:
    """The `@hydra.main` function of jobs/<job>.py: compose -> typed config -> library function.

    Errors in the config exit 2 with the message, like the CLI; Hydra's own flags (--cfg, -m
    multirun, --help) work as usual.
    """
    # Hydra's app runner: only a jobs/*.py entrypoint needs it (the CLI composes without it).
    import hydra

    register_schemas()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=job)
    def main(cfg: DictConfig) -> None:
        configure_logging()
        try:
            typed = to_typed(cfg)
        except UserError as exc:
            print(f"rayloom {job}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        run_job_or_exit(job, typed)

    return main
