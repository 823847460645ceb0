"""`rayloom tune`: a Ray Tune sweep whose trials are runs of the real distributed trainer.

`sweep(cfg)` checks everything it can before Ray runs a trial (search space against the schema,
the data's validation split, the trainer's own config checks for the base config), builds the
scheduler (ASHA, PBT or FIFO) and the searcher (random/grid, or Optuna when installed), runs the
trials (resuming the sweep of the same name when its directory exists), and writes the results:
a trial table (CSV + Markdown), a loss-curve plot (PNG) and the best trial's config as an
experiment YAML, all in the sweep directory `<tune.storage_path>/<tune.name>`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.data import default_output, read_manifest
from rayloom.errors import UserError
from rayloom.models import resolve_model_dir
from rayloom.runtime import apply_storage_env, ray_session
from rayloom.train import check_config, ray_storage_options
from rayloom.tune.reaper import PlacementGroupReaper
from rayloom.tune.results import SweepResult, summarize_sweep
from rayloom.tune.space import apply_overrides, build_mutations, build_param_space
from rayloom.tune.trial import SweepJob, evaluation_interval, trial_fn

log = logging.getLogger(__name__)


def sweep_storage_path(cfg: RayloomConfig) -> str:
    path = cfg.tune.storage_path or storage.join(cfg.storage.root, "tune")
    return path if storage.is_s3(path) else os.path.abspath(path)


def sweep_dir(cfg: RayloomConfig) -> str:
    return storage.join(sweep_storage_path(cfg), cfg.tune.name)


def _absolute(path: str) -> str:
    return path if not path or storage.is_s3(path) else os.path.abspath(path)


def absolutize_paths(cfg: RayloomConfig) -> RayloomConfig:
    """Trials run in their own working directories, so every local path is made absolute first."""
    model = cfg.model
    if model.path and not storage.is_s3(model.path) and model.path.startswith((".", "/", "~")):
        model = dataclasses.replace(model, path=os.path.abspath(os.path.expanduser(model.path)))
    return dataclasses.replace(
        cfg,
        model=model,
        storage=dataclasses.replace(cfg.storage, root=_absolute(cfg.storage.root)),
        train=dataclasses.replace(cfg.train, storage_path=_absolute(cfg.train.storage_path)),
        data=dataclasses.replace(cfg.data, output=_absolute(cfg.data.output)),
        tracking=dataclasses.replace(cfg.tracking, tensorboard_dir=_absolute(cfg.tracking.tensorboard_dir)),
    )


def check_sweep(cfg: RayloomConfig, data_output: str) -> None:
    """Everything that can be checked before a trial launches, each failure naming the key."""
    tune = cfg.tune  # its search space was checked against the schema when cfg was built
    if not tune.space:
        raise UserError("tune.space is empty: name at least one config key to search (see conf/tune/asha.yaml)")
    check_config(cfg)
    check_space_values(cfg)
    if cfg.train.max_steps < tune.num_reports:
        raise UserError(f"invalid config value tune.num_reports={tune.num_reports}: each trial trains "
                        f"train.max_steps={cfg.train.max_steps} steps, fewer than its evaluations")
    if cfg.train.max_steps % tune.num_reports:
        raise UserError(f"invalid config value tune.num_reports={tune.num_reports}: train.max_steps="
                        f"{cfg.train.max_steps} must be a multiple of it (trials evaluate every "
                        "max_steps/num_reports steps)")
    if tune.metric in ("val_loss",):
        if "validation" not in read_manifest(data_output).splits:
            raise UserError(f"tune.metric=val_loss needs a validation split, and the shards at {data_output!r} have "
                            "none (data.validation_fraction > 0 when building them)")
        if cfg.train.eval_batches == 0:
            raise UserError("tune.metric=val_loss needs train.eval_batches > 0")
    if tune.scheduler == "pbt" and tune.perturbation_interval >= tune.num_reports:
        raise UserError(f"invalid config value tune.perturbation_interval={tune.perturbation_interval}: PBT "
                        f"never perturbs when it is >= tune.num_reports={tune.num_reports}")
    if tune.search_alg == "optuna":
        build_searcher(tune)


def check_space_values(cfg: RayloomConfig) -> None:
    """Apply each spec's extremes (low/high, every listed value) to the config so a value a group
    rejects (peft.dropout=1.5, an unknown objective) fails now, not inside a trial."""
    for path, spec in cfg.tune.space.items():
        values = spec["values"] if "values" in spec else [spec["low"], spec["high"]]
        for value in values:
            try:
                apply_overrides(cfg, {path: value})
            except UserError as exc:
                raise UserError(f"tune.space.{path}: the value {value!r} is not a valid {path}: {exc}") from None


def build_scheduler(tune_cfg):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if tune_cfg.scheduler == "asha":
        # Time is counted in evaluations (training_iteration); every trial has num_reports of them.
        return ASHAScheduler(time_attr="training_iteration", max_t=tune_cfg.num_reports,
                             grace_period=tune_cfg.grace_period, reduction_factor=tune_cfg.reduction_factor)
    if tune_cfg.scheduler == "pbt":
        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=tune_cfg.perturbation_interval,
                                       hyperparam_mutations=build_mutations(tune_cfg.space),
                                       quantile_fraction=tune_cfg.quantile_fraction,
                                       log_config=True)
    return FIFOScheduler()


def build_searcher(tune_cfg):
    if tune_cfg.search_alg == "optuna":
        try:
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise UserError("tune.search_alg=optuna needs the optuna package (pip install optuna); or use "
                            "tune.search_alg=random") from None
        return OptunaSearch(seed=tune_cfg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune only applies TuneConfig.max_concurrent_trials to the searcher it builds itself.
    return BasicVariantGenerator(random_state=tune_cfg.seed, max_concurrent=tune_cfg.max_concurrent_trials)


def refuse_foreign_sweep_dir(cfg: RayloomConfig) -> None:
    """A non-empty folder at the sweep directory that holds no Tune experiment is not rayloom's:
    Ray Tune would write its trials among the user's files, and tune.on_existing=overwrite would
    not apply to it. Refused, naming the path (checked before Ray starts)."""
    path = sweep_dir(cfg)
    if not storage.exists(path):
        return
    files = storage.list_files(path)
    if files and not any(Path(f).name.startswith("experiment_state") for f in files):
        raise UserError(f"tune.name={cfg.tune.name!r}: {path} already exists and was not written by rayloom "
                        f"({len(files)} file(s) and no Ray Tune sweep, e.g. {sorted(files)[0]!r}); rayloom does "
                        "not write among them. Pick a new tune.name, or move that folder away.")


def _prepare_sweep_dir(cfg: RayloomConfig, tuner_cls) -> bool:
    """Apply tune.on_existing to an existing sweep directory; True when the sweep resumes."""
    path = sweep_dir(cfg)
    refuse_foreign_sweep_dir(cfg)
    if not tuner_cls.can_restore(path):
        return False
    if cfg.tune.on_existing == "error":
        raise UserError(f"sweep {cfg.tune.name!r} already exists at {path}: pick a new tune.name, or set "
                        "tune.on_existing=resume (continue it) or overwrite (start over)")
    if cfg.tune.on_existing == "overwrite":
        log.info("tune.on_existing=overwrite: deleting the previous sweep at %s", path)
        storage.remove(path)
        return False
    return True


def sweep(cfg: RayloomConfig, data_output: str | None = None, callbacks: Sequence = ()) -> SweepResult:
    """Run (or resume) the sweep `cfg.tune` over training runs on the shards at `data_output`
    (default: data.output, else <storage.root>/data/<data.name>). Needs a running Ray.

    `callbacks` are extra `ray.tune.Callback`s for a new sweep. Tune stores them with the sweep's
    state, so a resumed sweep runs the ones it was started with."""
    from ray import tune

    cfg = absolutize_paths(cfg)
    data_output = _absolute(data_output or default_output(cfg))
    check_sweep(cfg, data_output)
    tune_cfg = cfg.tune
    # Build (or fetch) the model once here, so concurrent trials do not race to build it.
    resolve_model_dir(cfg.model)
    job = SweepJob(cfg=cfg, space=dict(tune_cfg.space), data_output=data_output, sweep_name=tune_cfg.name,
                   metric=tune_cfg.metric, num_reports=tune_cfg.num_reports)
    trainable = tune.with_resources(tune.with_parameters(trial_fn, job=job), {"cpu": tune_cfg.trial_driver_cpus})
    # PBT draws its perturbations from Python's global random module.
    random.seed(tune_cfg.seed)
    resumed = _prepare_sweep_dir(cfg, tune.Tuner)
    if resumed:
        log.info("resuming sweep %s from %s", tune_cfg.name, sweep_dir(cfg))
        tuner = tune.Tuner.restore(sweep_dir(cfg), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=build_param_space(tune_cfg.space,
                                                                                       tune_cfg.search_alg))
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=build_param_space(tune_cfg.space, tune_cfg.search_alg),
            tune_config=tune.TuneConfig(
                metric=tune_cfg.metric, mode=tune_cfg.mode, scheduler=build_scheduler(tune_cfg),
                search_alg=None if tune_cfg.scheduler == "pbt" else build_searcher(tune_cfg),
                num_samples=tune_cfg.num_samples,
                # The random/grid searcher carries its own limit (see build_searcher).
                max_concurrent_trials=tune_cfg.max_concurrent_trials if tune_cfg.search_alg == "optuna"
                or tune_cfg.scheduler == "pbt" else None,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=tune_cfg.name,
                **ray_storage_options(sweep_storage_path(cfg)),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                callbacks=list(callbacks),
                verbose=1,
            ),
        )
    interval = evaluation_interval(cfg.train.max_steps, tune_cfg.num_reports)
    log.info("sweep %s: %s + %s, %d sample(s), %d concurrent, each trial %d steps with an evaluation every %d",
             tune_cfg.name, tune_cfg.scheduler, tune_cfg.search_alg, tune_cfg.num_samples,
             tune_cfg.max_concurrent_trials, cfg.train.max_steps, interval)
    with PlacementGroupReaper():
        grid = tuner.fit()
    return summarize_sweep(cfg, grid, sweep_dir(cfg), resumed=resumed)


def run_tune_job(cfg: RayloomConfig) -> SweepResult:
    """`rayloom tune [overrides]`: sweep cfg.tune over training runs on the committed shards."""
    apply_storage_env(cfg.storage)
    refuse_foreign_sweep_dir(absolutize_paths(cfg))  # bad input -> a clear error before Ray starts
    check_sweep(absolutize_paths(cfg), default_output(cfg))
    read_manifest(default_output(cfg))
    with ray_session(cfg.cluster, cfg.storage):
        result = sweep(cfg)
    print(result.render())
    return result
