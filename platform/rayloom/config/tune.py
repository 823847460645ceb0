"""Tune group: search space, scheduler and searcher for sweeps (`rayloom tune`, rayloom.tune)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayloom.config._validate import one_of, positive, require, safe_name
from rayloom.config.search_space import check_space_specs, flatten_space


@dataclass
class TuneConfig:
    # The sweep's name: its directory is <storage_path>/<name>, and rerunning the same name resumes it.
    name: str = "sweep"
    # Dotted config path -> distribution spec (rayloom.config.search_space), e.g.
    #   train.lr: {type: loguniform, low: 1e-4, high: 1e-2}
    #   peft.r: {type: choice, values: [4, 8, 16]}
    #   train.warmup_steps: {type: grid, values: [0, 10]}
    # Specs are checked here, their paths against the typed root (RayloomConfig) while composing.
    space: dict[str, Any] = field(default_factory=dict)
    # Trials to sample (with grid values: repeats of the whole grid).
    num_samples: int = 4
    max_concurrent_trials: int = 1
    scheduler: str = "asha"
    search_alg: str = "random"
    # A metric every trial reports at each evaluation (val_loss needs a validation split).
    metric: str = "val_loss"
    mode: str = "min"
    # ASHA: evaluations a trial gets before it can be stopped, and the halving rate.
    grace_period: int = 1
    reduction_factor: int = 2
    # PBT: evaluations between exploit/explore decisions; the quantile that is replaced.
    perturbation_interval: int = 2
    quantile_fraction: float = 0.25
    # Evaluations per trial; each trial trains train.max_steps in total, so it evaluates (and
    # checkpoints) every train.max_steps / num_reports steps. ASHA and PBT count in evaluations.
    num_reports: int = 4
    seed: int = 0
    # Where sweeps live; empty -> <storage.root>/tune.
    storage_path: str = ""
    # Rerun of a sweep name whose directory exists: "resume" (continue unfinished trials, keep
    # finished ones), "overwrite" (start over) or "error".
    on_existing: str = "resume"
    # The best trial's config as an experiment YAML; empty -> <sweep dir>/best_experiment.yaml.
    best_config_path: str = ""
    # Also write it to conf/experiment/<name>_best.yaml, ready for `+experiment=<name>_best`.
    write_experiment: bool = False
    # CPUs held by each trial's driver (the Tune trial that launches the Ray Train run); the
    # trainer's workers bring their own (train.num_workers x train.cpus_per_worker). Ray Tune needs
    # a non-zero request; the driver mostly waits, so a small fraction keeps cores for the workers.
    trial_driver_cpus: float = 0.1

    def __post_init__(self) -> None:
        positive(self.num_samples, "tune.num_samples")
        positive(self.max_concurrent_trials, "tune.max_concurrent_trials")
        one_of(self.scheduler, ("asha", "pbt", "fifo"), "tune.scheduler")
        one_of(self.search_alg, ("random", "grid", "optuna"), "tune.search_alg")
        one_of(self.mode, ("min", "max"), "tune.mode")
        positive(self.grace_period, "tune.grace_period")
        require(self.reduction_factor >= 2, "tune.reduction_factor", "must be >= 2", self.reduction_factor)
        positive(self.perturbation_interval, "tune.perturbation_interval")
        require(0 < self.quantile_fraction <= 0.5, "tune.quantile_fraction", "must be in (0, 0.5]",
                self.quantile_fraction)
        positive(self.num_reports, "tune.num_reports")
        require(self.grace_period <= self.num_reports, "tune.grace_period",
                f"must be <= tune.num_reports={self.num_reports}", self.grace_period)
        require(bool(self.metric), "tune.metric", "must not be empty", self.metric)
        one_of(self.on_existing, ("resume", "overwrite", "error"), "tune.on_existing")
        safe_name(self.name, "tune.name")
        positive(self.trial_driver_cpus, "tune.trial_driver_cpus")
        require(self.scheduler != "pbt" or self.search_alg == "random", "tune.search_alg",
                "PBT samples its own initial values: use tune.search_alg=random with tune.scheduler=pbt",
                self.search_alg)
        # Spec shapes only: whether a path names a real key is the root schema's check.
        self.space = flatten_space(self.space)
        check_space_specs(self.space, self.scheduler, self.search_alg)
