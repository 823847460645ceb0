"""Run group: which stages the main job (`rayloom run`) chains together."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import one_of

STAGES = ("model", "data", "train", "sft", "align", "tune", "eval", "serve")


@dataclass
class RunConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # Include a small Ray Tune sweep in the demo.
    tune: bool = False

    def __post_init__(self) -> None:
        for stage in self.stages:
            one_of(stage, STAGES, "run.stages[]")
