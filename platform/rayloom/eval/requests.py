"""What every target answers: generation and log-likelihood requests, as plain JSON-able records.

Both targets (offline vLLM over Ray Data, and an OpenAI-compatible endpoint) take the same
requests, so a task is scored the same way whichever served the model. Requests travel through
Ray Data as JSON strings: one string column avoids Arrow schema inference over nested messages.
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


def score_span(logprobs: list[float | None], starts: list[int], boundary: int,
               top_logprobs: list[float | None] | None = None) -> tuple[float, int, bool]:
    """Sum the log-probabilities of the tokens that start at or after `boundary` (a character offset).

    `logprobs[i]` is log p(token i | tokens before it) (None for the first token, which has no
    context); `top_logprobs[i]` the best log-probability at that position, for the greedy check.
    A token straddling the boundary belongs to the context, on both targets alike.
    """
    total, count, greedy = 0.0, 0, True
    for index, (logprob, start) in enumerate(zip(logprobs, starts, strict=True)):
        if start < boundary or logprob is None:
            continue
        total += logprob
        count += 1
        if top_logprobs is not None and top_logprobs[index] is not None and logprob < top_logprobs[index] - 1e-6:
            greedy = False
    return total, count, greedy and count > 0
