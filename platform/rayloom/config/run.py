"""Run group: which stages the main job (`rayloom run`) chains together."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import one_of, positive

STAGES = ("model", "data", "train", "sft", "align", "tune", "eval", "serve")


@dataclass
class RunConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # Include a small Ray Tune sweep in the demo.
    tune: bool = False
    # Learning rate of the demo's alignment stage (LoRA DPO of the SFT model). Preference tuning
    # of a fine-tuned model runs well below SFT learning rates: on the tiny demo model lr 5e-3
    # left held-out perplexity 78x the pre-trained model's and the answers garbage; at 1e-4 the
    # held-out exact-match answers stay at the SFT model's level.
    align_lr: float = 1e-4

    def __post_init__(self) -> None:
        positive(self.align_lr, "run.align_lr")
        for stage in self.stages:
            one_of(stage, STAGES, "run.stages[]")
