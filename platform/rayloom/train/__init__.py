"""Training on Ray Train + DeepSpeed: `train(cfg)` runs the one training loop (rayloom.train.train_fn)
on Ray Train workers and exports the result; `rayloom train` is `run_train_job(cfg)`;
`rayloom export` is `export_main(argv)`.

Objectives are registered by the package that provides them (`register_objective`): this package
registers clm and sft, rayloom.align the preference and safety objectives. Importing this package
does not import torch or Ray.
"""

from rayloom.train.checks import check_config
from rayloom.train.driver import TrainResult, run_train_job, train
from rayloom.train.export import export_checkpoint, export_main
from rayloom.train.objectives import Objective, ObjectiveBuilder, register_objective
from rayloom.train.paths import RunPaths, ray_storage_options

__all__ = ["Objective", "ObjectiveBuilder", "RunPaths", "TrainResult", "check_config", "export_checkpoint",
           "export_main", "ray_storage_options", "register_objective", "run_train_job", "train"]
