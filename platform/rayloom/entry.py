"""The one table of commands -> library functions, shared by the CLI and the jobs/ entrypoints.

Job commands take one typed `RayloomConfig` (composed from conf/<job>.yaml + overrides). Tool
commands (chat, submit, jobs, cluster, export) take their argv. A command whose capability is not
built yet is listed in NOT_BUILT with what is missing; running it raises NotBuiltError instead of
pretending. When a capability lands, its line in NOT_BUILT is deleted.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from rayloom.config import RayloomConfig
from rayloom.errors import NotBuiltError, UserError
from rayloom.log_setup import configure_logging

# job command -> "module:function(cfg: RayloomConfig)"
JOB_FUNCTIONS: dict[str, str] = {
    "run": "rayloom.demo:run_main",
    "data": "rayloom.data.pipeline:run_data_job",
    "train": "rayloom.train.driver:run_train_job",
    "tune": "rayloom.tune.sweep:run_tune_job",
    "eval": "rayloom.eval.runner:run_eval_job",
    "serve": "rayloom.serve.deploy:run_serve_job",
}

# tool command -> "module:function(argv: list[str]) -> int"
TOOL_FUNCTIONS: dict[str, str] = {
    "chat": "rayloom.serve.chat:chat_main",
    "submit": "rayloom.cluster.submit:submit_main",
    "jobs": "rayloom.cluster.submit:jobs_main",
    "cluster": "rayloom.cluster.local_fake:cluster_main",
    "export": "rayloom.train.export:export_main",
}

# command -> what is missing, for capabilities still to be built.
NOT_BUILT: dict[str, str] = {
}


def resolve(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def command_function(command: str) -> Callable[..., Any]:
    if command in NOT_BUILT:
        raise NotBuiltError(
            f"`rayloom {command}` is not built yet: {NOT_BUILT[command]} is still to come. Nothing was run."
        )
    return resolve(JOB_FUNCTIONS.get(command) or TOOL_FUNCTIONS[command])


def run_job(job: str, cfg: RayloomConfig) -> Any:
    return command_function(job)(cfg)


def run_job_or_exit(job: str, cfg: RayloomConfig) -> Any:
    """For jobs/*.py: user mistakes and missing capabilities end the process without a traceback."""
    try:
        return run_job(job, cfg)
    except UserError as exc:
        print(f"rayloom {job}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except NotBuiltError as exc:
        print(f"rayloom {job}: {exc}", file=sys.stderr)
        sys.exit(3)


def hydra_entrypoint(job: str) -> Callable[[], None]:
    """The `@hydra.main` function of jobs/<job>.py: compose -> typed config -> library function.

    Errors in the config exit 2 with the message, like the CLI; Hydra's own flags (--cfg, -m
    multirun, --help) work as usual.
    """
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
