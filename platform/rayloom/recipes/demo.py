"""The demo recipe (`rayloom run` / `make demo`): the tiny model from data to a served endpoint.

model -> data -> pre-train -> SFT -> align -> (tune) -> eval -> serve, on one Ray session.

Every stage's settings come from Hydra: a training stage's config is conf/run.yaml composed with
the stage's overrides (run.stage.<name>, in conf/run/demo.yaml) and then with the command line's
overrides (run.overrides), so whatever the user set wins in every stage; `rayloom config run`
shows all of it. The model, eval and serve stages use the run config itself. What the recipe
sets in code is only the data flow: which shards a stage reads and which exported model it
starts from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from rayloom import storage
from rayloom.config import RayloomConfig, compose, to_yaml
from rayloom.recipes.console import QuietConsole, quiet_console
from rayloom.recipes.demo_stages import stage_data, stage_eval, stage_model, stage_serve
from rayloom.recipes.demo_training import stage_align, stage_pretrain, stage_rl, stage_sft, stage_tune
from rayloom.recipes.state import DemoState

# Stages whose config is composed from run.stage.<name>; the others use the run config itself.
STAGES_WITH_OWN_CONFIG = ("data", "train", "sft", "align", "rl", "tune")


@dataclass
class StageConfigs:
    """The composed config of each selected data and training stage (None: the stage does not run).
    The data stage has one per corpus part."""

    data: dict[str, RayloomConfig] | None = None
    train: RayloomConfig | None = None
    sft: RayloomConfig | None = None
    align: RayloomConfig | None = None
    rl: RayloomConfig | None = None
    tune: RayloomConfig | None = None


def command_line_overrides(cfg: RayloomConfig) -> list[str]:
    """The overrides cfg was composed with: run.overrides, which rayloom.config.compose fills; under
    a Hydra entrypoint (jobs/run.py, what `rayloom submit run` starts), Hydra's own record of them."""
    if cfg.run.overrides:
        return list(cfg.run.overrides)
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def stage_config(cfg: RayloomConfig, stage_overrides: list[str]) -> RayloomConfig:
    """conf/run.yaml + a stage's overrides + the command line's, in that order: the command line wins."""
    return compose("run", [*stage_overrides, *command_line_overrides(cfg)])


def stage_configs(cfg: RayloomConfig) -> StageConfigs:
    """The configs of the data and training stages in cfg.run.selected; a mistake in any stage's
    settings fails here, before work starts."""
    selected, stage = cfg.run.selected, cfg.run.stage
    if any(name in selected for name in STAGES_WITH_OWN_CONFIG):
        _check_overrides_known(cfg)

    def composed(name: str, overrides: list[str]) -> RayloomConfig | None:
        return stage_config(cfg, overrides) if name in selected else None

    data = {part: stage_config(cfg, overrides) for part, overrides in stage.data.items()} \
        if "data" in selected else None
    return StageConfigs(data=data, train=composed("train", stage.train), sft=composed("sft", stage.sft),
                        align=composed("align", stage.align), rl=composed("rl", stage.rl),
                        tune=composed("tune", stage.tune))


def _check_overrides_known(cfg: RayloomConfig) -> None:
    # The stages are composed from the command line's overrides, not from cfg: a cfg changed after
    # composing, or composed with overrides that run.overrides does not list, would be lost silently.
    recomposed = stage_config(cfg, [])
    if to_yaml(replace(recomposed, run=cfg.run)) != to_yaml(cfg):
        raise RuntimeError(f"rayloom.recipes: cfg is not conf/run.yaml composed with run.overrides "
                           f"({command_line_overrides(cfg)}), so its stages would lose what differs; compose it "
                           "with rayloom.config.compose, which records the overrides there")


def run_demo(cfg: RayloomConfig) -> DemoState:
    """Run the stages in cfg.run.selected; returns what they produced."""
    from rayloom.runtime import ray_session

    stages = cfg.run.selected
    configs = stage_configs(cfg)
    state = DemoState()
    started = time.perf_counter()
    log_file = _log_dir(cfg) / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}.log"
    with _console(cfg, log_file) as console, ray_session(cfg.cluster, cfg.storage):
        _print_log_locations(log_file if console else None)
        # In this order whatever order run.stages lists them in: each stage reads what the earlier ones left in state.
        for name, run_stage, stage_cfg in (
                ("model", stage_model, cfg), ("data", stage_data, configs.data),
                ("train", stage_pretrain, configs.train), ("sft", stage_sft, configs.sft),
                ("align", stage_align, configs.align), ("rl", stage_rl, configs.rl), ("tune", stage_tune, configs.tune),
                ("eval", stage_eval, cfg), ("serve", stage_serve, cfg)):
            if name in stages:
                with _stage(name, console):
                    run_stage(stage_cfg, state)
    print(f"\nrayloom run: {len(stages)} stage(s) ran ({', '.join(stages)}) in {time.perf_counter() - started:.0f}s")
    return state


@contextmanager
def _stage(name: str, console: QuietConsole | None) -> Iterator[None]:
    if console is not None:
        console.mute()  # loggers that the previous stage's libraries set up
    print(f"\n== stage {name} ==", flush=True)
    start = time.perf_counter()
    yield
    print(f"  ({time.perf_counter() - start:.1f}s)", flush=True)


@contextmanager
def _console(cfg: RayloomConfig, log_file: Path) -> Iterator[QuietConsole | None]:
    """Quiet unless cluster.log_to_driver=true asks for every library's output on the console."""
    if cfg.cluster.log_to_driver:
        yield None
        return
    with quiet_console(log_file) as console:
        yield console


def _log_dir(cfg: RayloomConfig) -> Path:
    # The log file is written as the run goes, so it stays on this machine even with s3:// storage.
    return Path("runs" if storage.is_s3(cfg.storage.root) else cfg.storage.root) / "logs"


def _print_log_locations(log_file: Path | None) -> None:
    where = f"{log_file}; " if log_file else ""
    print(f"logs: {where}Ray's (workers, engines, Serve, Ray Data): {_ray_log_dir()}", flush=True)


def _ray_log_dir() -> str:
    import ray

    # Ray has no public accessor for the session directory (Ray Data's own log path uses this one);
    # a ray:// client has no local node.
    node = ray._private.worker._global_node  # noqa: SLF001
    return str(Path(node.get_session_dir_path()) / "logs") if node is not None else "on the cluster's head node"
