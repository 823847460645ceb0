"""The root schema: one typed tree that every job composes, and its ConfigStore registration."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config.cluster import ClusterConfig
from rayloom.config.data import DataConfig
from rayloom.config.eval import EvalConfig
from rayloom.config.model import ModelConfig
from rayloom.config.plan import PlanConfig
from rayloom.config.run import RunConfig
from rayloom.config.search_space import check_space_paths
from rayloom.config.serve import ServeConfig
from rayloom.config.storage import StorageConfig
from rayloom.config.tracking import TrackingConfig
from rayloom.config.train import DeepSpeedConfig, ObjectiveConfig, PeftConfig, TrainConfig
from rayloom.config.tune import TuneConfig
from rayloom.storage import check_output_path


@dataclass
class RayloomConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        # Cross-group checks live here, where every group is known; a group's schema checks itself.
        check_space_paths(self.tune.space, RayloomConfig)
        # Outputs that would swallow the storage root (e.g. export_dir=runs) are refused at compose
        # time; commit-time checks (rayloom.storage) also refuse a job's own inputs.
        for key, output in (("train.export_dir", self.train.export_dir), ("eval.output", self.eval.output),
                            ("data.output", self.data.output)):
            if output:
                check_output_path(output, root=self.storage.root, what=key)


GROUP_SCHEMAS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "deepspeed": DeepSpeedConfig,
    "peft": PeftConfig,
    "objective": ObjectiveConfig,
    "tune": TuneConfig,
    "eval": EvalConfig,
    "serve": ServeConfig,
    "cluster": ClusterConfig,
    "storage": StorageConfig,
    "tracking": TrackingConfig,
    "plan": PlanConfig,
    "run": RunConfig,
}

_registered = False


def register_schemas() -> None:
    """Register the root schema (which types every group) and each group's schema.

    The primary configs list `rayloom_schema` first in their defaults, so every group file and
    every override is merged into a typed, struct-mode tree: an unknown key or a wrong type fails
    while composing, with the full key in the message.
    """
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="rayloom_schema", node=RayloomConfig)
    for group, schema in GROUP_SCHEMAS.items():
        # Available as e.g. `defaults: [/schema/model@_here_]` for group files outside this repo.
        store.store(group="schema", name=group, node=schema)
    _registered = True
