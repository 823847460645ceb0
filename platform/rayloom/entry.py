"""The one table of jobs, shared by the CLI (`rayloom <job>`) and the jobs/*.py entrypoints.

Every job takes one typed `RayloomConfig` composed from conf/<job>.yaml + overrides and calls one
library function. The names are those of rayloom.config.JOBS, the primary configs that compose
accepts (a unit test keeps the two equal). The tool commands (chat, submit, jobs, cluster, export)
take their own arguments; rayloom.cli adds them to its parser tree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rayloom.errors import UserError
from rayloom.log_setup import configure_logging

if TYPE_CHECKING:
    from rayloom.config import RayloomConfig


@dataclass(frozen=True)
class Job:
    help: str
    run: Callable[[RayloomConfig], Any]


# Each job imports its library package inside its function, so that `rayloom --help` and a
# jobs/<job>.py entrypoint load only the package that runs.

def _run(cfg: RayloomConfig) -> Any:
    from rayloom.recipes import run_demo  # every stage's package: only when `rayloom run` runs

    return run_demo(cfg)


def _data(cfg: RayloomConfig) -> Any:
    from rayloom.data.pipeline import run_data_job  # only when `rayloom data` runs

    return run_data_job(cfg)


def _train(cfg: RayloomConfig) -> Any:
    from rayloom.train.driver import run_train_job  # only when `rayloom train` runs

    return run_train_job(cfg)


def _tune(cfg: RayloomConfig) -> Any:
    from rayloom.tune.sweep import run_tune_job  # only when `rayloom tune` runs

    return run_tune_job(cfg)


def _eval(cfg: RayloomConfig) -> Any:
    from rayloom.eval.runner import run_eval_job  # only when `rayloom eval` runs

    return run_eval_job(cfg)


def _serve(cfg: RayloomConfig) -> Any:
    from rayloom.serve.deploy import run_serve_job  # only when `rayloom serve` runs

    return run_serve_job(cfg)


JOBS: dict[str, Job] = {
    "run": Job("the main job: build the tiny model and run every stage (data, train, align, eval, serve)", _run),
    "data": Job("prepare data with Ray Data: read, clean, dedup, tokenize, pack, write shards", _data),
    "train": Job("train with Ray Train + DeepSpeed ZeRO (pre-training, SFT, LoRA, alignment)", _train),
    "tune": Job("sweep hyperparameters with Ray Tune over real training runs", _tune),
    "eval": Job("evaluate a checkpoint or endpoint: metrics, safety probes, report, deploy gate", _eval),
    "serve": Job("serve a model with Ray Serve + vLLM behind an OpenAI-compatible endpoint", _serve),
}


def resolve(target: str) -> Callable[..., Any]:
    """TRANSITIONAL, for rayloom.demo's stage table until rayloom.recipes replaces it (issue #14)."""
    import importlib

    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


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
    # Hydra and the config schemas: only a jobs/*.py entrypoint needs them here.
    import hydra
    from omegaconf import DictConfig

    from rayloom.config import conf_dir, register_schemas, to_typed

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
