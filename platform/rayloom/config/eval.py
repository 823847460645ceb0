"""Eval group: what to evaluate, against which target, and the deploy gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import one_of, positive


@dataclass
class EvalConfig:
    # "checkpoint": offline vLLM over Ray Data on model.path; "endpoint": an OpenAI-compatible URL.
    target: str = "checkpoint"
    endpoint_url: str = ""
    # Name of the environment variable holding the endpoint's API key (never the key).
    api_key_env: str = "RAYLOOM_API_KEY"
    tasks: list[str] = field(default_factory=lambda: ["demo_arith"])
    max_examples: int = 200
    num_replicas: int = 1
    batch_size: int = 16
    # Metric name -> threshold; a metric prefixed "max:" must stay below, others above.
    gate: dict[str, float] = field(default_factory=dict)
    output: str = ""

    def __post_init__(self) -> None:
        one_of(self.target, ("checkpoint", "endpoint"), "eval.target")
        positive(self.max_examples, "eval.max_examples")
        positive(self.num_replicas, "eval.num_replicas")
        positive(self.batch_size, "eval.batch_size")
