"""rayloom plan: per-worker memory and throughput of a configured training run, the configurations that
fit, and the preflight check the training driver runs before any worker starts (docs/planning.md).

Pure arithmetic over the typed config: no torch import unless a capacity or FLOP/s ceiling has to be
detected on this machine.
"""

from rayloom.planner.core import Capacity, Plan, detect_capacity, plan_run, setup_from_config
from rayloom.planner.job import PlanResult, add_plan_command, check_fits, plan_main, preflight, run_plan_job
from rayloom.planner.memory import Breakdown, Setup, Term, estimate
from rayloom.planner.search import Candidate, search_configs, write_experiment
from rayloom.planner.shapes import KNOWN, ModelShape, model_shape

__all__ = [
    "KNOWN", "Breakdown", "add_plan_command", "Candidate", "Capacity", "ModelShape", "Plan", "PlanResult", "Setup", "Term",
    "check_fits", "detect_capacity", "estimate", "model_shape", "plan_main", "plan_run", "preflight",
    "run_plan_job", "search_configs", "setup_from_config", "write_experiment",
]
