"""What every target answers: generation and log-likelihood requests, as plain JSON-able records.

rayloom.align's safety measure builds these for generation.score_refusal; evaluation runs go
through lm-evaluation-harness (its own Instance requests).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

GENERATE = "generate"
LOGLIKELIHOOD = "loglikelihood"


@dataclass
class EvalRequest:
    id: str
    kind: str
    # Text format: the prompt string. Chat format: the conversation, rendered by the model's own
    # chat template (vLLM's chat path, or the endpoint's /v1/chat/completions).
    prompt: str = ""
    messages: list[dict[str, str]] | None = None
    # loglikelihood: the scored text that follows the context (prompt or rendered messages).
    continuation: str = ""
    max_tokens: int = 32
    stop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.kind in (GENERATE, LOGLIKELIHOOD), self.kind
        assert (self.messages is None) or not self.prompt, "a request is either text or chat"

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EvalRequest:
        return cls(**json.loads(text))


@dataclass
class EvalResponse:
    id: str
    text: str = ""
    # loglikelihood: sum of the continuation tokens' log-probabilities (nats) and their count.
    logprob: float = 0.0
    num_tokens: int = 0
    # Every continuation token was the model's top-1 choice.
    is_greedy: bool = False
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EvalResponse:
        return cls(**json.loads(text))
