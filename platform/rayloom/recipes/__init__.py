"""Recipes: end-to-end runs composed from the library's public faces and Hydra configs.

- `run_demo(cfg)`: the demo (`rayloom run` / `make demo`), model -> data -> pre-train -> SFT ->
  align -> (tune) -> eval -> serve; each stage's settings are in conf/run/demo.yaml.
- `stage_configs(cfg)`: the config each training stage of the demo runs with.
- `DemoState`: what the demo's stages hand each other.

Importing this package imports neither torch nor Ray.
"""

from rayloom.recipes.demo import StageConfigs, run_demo, stage_config, stage_configs
from rayloom.recipes.state import DemoState

__all__ = ["DemoState", "StageConfigs", "run_demo", "stage_config", "stage_configs"]
