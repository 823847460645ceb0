"""Ray Tune sweeps over the real trainer: `sweep(cfg)` runs (or resumes) the sweep `cfg.tune` and
returns a `SweepResult`; `rayloom tune` is `run_tune_job(cfg)`. Search-space specs are checked by
rayloom.config.search_space while the config composes. Importing this package does not import Ray.
"""

from rayloom.tune.results import SweepResult
from rayloom.tune.sweep import run_tune_job, sweep

__all__ = ["SweepResult", "run_tune_job", "sweep"]
