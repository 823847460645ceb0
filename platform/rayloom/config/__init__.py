"""Typed configuration: dataclass schemas for every Hydra group, and composition helpers."""

from rayloom.config.cluster import ClusterConfig
from rayloom.config.compose import JOBS, compose, conf_dir, repo_root, to_typed, to_yaml
from rayloom.config.data import DataConfig, DedupConfig, FilterConfig, SourceConfig
from rayloom.config.eval import EvalConfig
from rayloom.config.model import ModelConfig
from rayloom.config.root import GROUP_SCHEMAS, RayloomConfig, register_schemas
from rayloom.config.run import RunConfig
from rayloom.config.serve import LoraAdapterConfig, ServeConfig
from rayloom.config.storage import StorageConfig
from rayloom.config.tracking import TrackingConfig
from rayloom.config.train import DeepSpeedConfig, ObjectiveConfig, PeftConfig, TrainConfig
from rayloom.config.tune import TuneConfig

__all__ = [
    "GROUP_SCHEMAS", "JOBS", "ClusterConfig", "DataConfig", "DedupConfig", "DeepSpeedConfig", "EvalConfig",
    "FilterConfig", "LoraAdapterConfig", "ModelConfig", "ObjectiveConfig", "PeftConfig", "RayloomConfig",
    "RunConfig", "ServeConfig", "SourceConfig", "StorageConfig", "TrackingConfig", "TrainConfig", "TuneConfig",
    "compose", "conf_dir", "register_schemas", "repo_root", "to_typed", "to_yaml",
]
