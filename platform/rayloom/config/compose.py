"""Compose the Hydra tree into a typed `RayloomConfig`, turning every config error into a UserError."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rayloom.config.root import RayloomConfig, register_schemas
from rayloom.errors import UserError

# Primary configs in conf/, one per job.
JOBS = ("run", "data", "train", "tune", "eval", "serve")


def repo_root() -> Path:
    """The project root (holds conf/, jobs/); the package lives at <root>/platform/rayloom."""
    return Path(__file__).resolve().parents[3]


def conf_dir() -> Path:
    override = os.environ.get("RAYLOOM_CONF_DIR")
    path = Path(override) if override else repo_root() / "conf"
    if not override and not (path / "base.yaml").is_file():
        # rayloom shipped as a py_module (a Ray job's runtime_env) sits apart from the project;
        # the job's working directory is the project root there.
        path = Path.cwd() / "conf"
    if not (path / "base.yaml").is_file():
        raise UserError(f"rayloom's config tree was not found at {path} (set RAYLOOM_CONF_DIR to the conf/ folder)")
    return path


def compose(job: str, overrides: list[str] | tuple[str, ...] = ()) -> RayloomConfig:
    """Compose `conf/<job>.yaml` with command-line style overrides and validate it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if job not in JOBS:
        raise UserError(f"unknown job {job!r}: choose one of {', '.join(JOBS)}")
    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name=job):
            cfg = hydra_compose(config_name=job, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(_one_paragraph(exc)) from None
    typed = to_typed(cfg)
    # The demo recipe composes each stage as conf/run.yaml + the stage's overrides + these, applied
    # last, so what the user typed wins in every stage (jobs/run.py records them from Hydra instead).
    typed.run.overrides = list(overrides)
    return typed


def to_typed(cfg: DictConfig) -> RayloomConfig:
    """Resolve interpolations and build the dataclass tree; `__post_init__` checks values."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        typed = OmegaConf.to_object(cfg)
    except UserError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise UserError(_one_paragraph(exc)) from None
    if not isinstance(typed, RayloomConfig):
        raise UserError("the composed config is not a rayloom config: does its defaults list start with rayloom_schema?")
    return typed


def to_yaml(cfg: RayloomConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _one_paragraph(exc: BaseException) -> str:
    # Hydra/OmegaConf messages carry "full_key:", "object_type=" lines; keep them, on one paragraph.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in str(exc):
        lines += [line.strip() for line in str(cause).splitlines() if line.strip()]
    return " ".join(lines)
