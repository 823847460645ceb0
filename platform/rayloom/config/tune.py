"""Tune group: search space, scheduler and searcher for sweeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayloom.config._validate import one_of, positive


@dataclass
class TuneConfig:
    name: str = "sweep"
    # Dotted config path -> distribution spec, e.g.
    #   train.lr: {type: loguniform, low: 1e-4, high: 1e-2}
    #   peft.r: {type: choice, values: [4, 8, 16]}
    space: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 4
    max_concurrent_trials: int = 1
    scheduler: str = "asha"
    search_alg: str = "random"
    metric: str = "val_loss"
    mode: str = "min"
    # ASHA
    grace_period: int = 1
    reduction_factor: int = 2
    # PBT
    perturbation_interval: int = 2
    # Reports (evaluations) per trial; each trial trains train.max_steps in total.
    num_reports: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        positive(self.num_samples, "tune.num_samples")
        positive(self.max_concurrent_trials, "tune.max_concurrent_trials")
        one_of(self.scheduler, ("asha", "pbt", "fifo"), "tune.scheduler")
        one_of(self.search_alg, ("random", "grid", "optuna"), "tune.search_alg")
        one_of(self.mode, ("min", "max"), "tune.mode")
        positive(self.grace_period, "tune.grace_period")
        positive(self.reduction_factor, "tune.reduction_factor")
        positive(self.perturbation_interval, "tune.perturbation_interval")
        positive(self.num_reports, "tune.num_reports")
