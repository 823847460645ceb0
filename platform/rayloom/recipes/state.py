"""What the demo's stages hand each other: a typed record of paths and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rayloom.recipes.demo_scores import Scoreboard


@dataclass
class DemoState:
    """Paths are local directories or storage URIs. Each stage fills its own fields."""

    model_dir: Path | None = None          # base model (HF dir): the model stage
    pretrain_data: str | None = None       # shards + manifest of the pre-training corpus: the data stage
    sft_data: str | None = None            # chat SFT shards
    preference_data: str | None = None     # chosen/rejected shards
    pretrained_dir: str | None = None      # HF dir after pre-training: the train stage
    sft_dir: str | None = None             # HF dir after SFT: the sft stage
    adapter_dir: str | None = None         # peft adapter of the SFT run, when it used one
    aligned_dir: str | None = None         # HF dir after preference alignment: the align stage
    rl_dir: str | None = None              # HF dir after online RL (GRPO): the rl stage
    final_model_dir: str | None = None     # the newest model: what eval compares with the base and serve hosts
    endpoint_url: str | None = None        # the serve stage
    # Per stage, what it measured (losses, accuracies, report paths), for callers and tests.
    summary: dict[str, object] = field(default_factory=dict)
    # Each training stage's model on held-out data, and each stage's loss (first, last): the goals.
    scores: Scoreboard = field(default_factory=Scoreboard)
