"""Run group: the demo recipe's stages (`rayloom run`, rayloom.recipes.run_demo) and each stage's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import one_of, require

# The recipe's stages, in the order it runs them ("train" is pre-training).
STAGES = ("model", "data", "train", "sft", "align", "rl", "tune", "eval", "serve")
# The parts of the demo corpus the data stage builds, and the training stages that read them.
DATA_PARTS = ("pretrain", "sft", "preference")
TRAINING_STAGES = ("train", "sft", "align", "rl", "tune")


@dataclass
class StageOverrides:
    """Each stage's Hydra overrides of the run config (conf/run/demo.yaml holds the demo's).

    The recipe composes a stage's config as conf/run.yaml + the stage's overrides + the command
    line's overrides (run.overrides): the command line comes last, so it wins in every stage.
    """

    # The data stage builds one dataset per demo-corpus part.
    data: dict[str, list[str]] = field(default_factory=lambda: {part: [] for part in DATA_PARTS})
    train: list[str] = field(default_factory=list)
    sft: list[str] = field(default_factory=list)
    align: list[str] = field(default_factory=list)
    rl: list[str] = field(default_factory=list)
    tune: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(sorted(self.data) == sorted(DATA_PARTS), "run.stage.data",
                f"must have one override list for each part: {', '.join(DATA_PARTS)}", sorted(self.data))


@dataclass
class RunConfig:
    # Which stages run; they always run in the recipe's order (STAGES).
    stages: list[str] = field(default_factory=lambda: [s for s in STAGES if s != "tune"])
    # Also run the tune stage (a small Ray Tune sweep) before eval.
    tune: bool = False
    stage: StageOverrides = field(default_factory=StageOverrides)
    # The command line's overrides, in order; the recipe applies them after each stage's own, so
    # they win. Filled by whoever composes the config from a command line (leave it empty).
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stage in self.stages:
            one_of(stage, STAGES, "run.stages[]")
        require(self.stages == sorted(set(self.stages), key=STAGES.index), "run.stages",
                f"must name each stage once, in the recipe's order ({', '.join(STAGES)})", self.stages)
        training = [s for s in self.selected if s in TRAINING_STAGES]
        require(not training or "data" in self.stages, "run.stages",
                f"the {', '.join(training)} stage(s) train on the data stage's shards: add data to run.stages",
                self.stages)
        using_base = [s for s in self.stages if s in ("eval", "serve")]
        require(not using_base or "model" in self.stages, "run.stages",
                f"the {', '.join(using_base)} stage(s) need the model stage's base model: add model to run.stages",
                self.stages)

    @property
    def selected(self) -> list[str]:
        """The stages that run: run.stages, plus tune when run.tune is set."""
        return [s for s in STAGES if s in self.stages or (s == "tune" and self.tune)]
