"""Perplexity on held-out text: every token after BOS is scored, token-weighted over the corpus.

Each text (chunked to `max_chars`) is one log-likelihood request with an empty context, so the
same numbers come from the offline engine and from an endpoint's echoed prompt log-probabilities.
"""

from __future__ import annotations

import math

from rayloom.eval import metrics as M
from rayloom.eval.requests import LOGLIKELIHOOD, EvalRequest, EvalResponse
from rayloom.eval.results import TaskResult
from rayloom.eval.tasks import TaskSpec


def build_requests(spec: TaskSpec, rows: list[dict], prefix: str) -> list[EvalRequest]:
    return [EvalRequest(id=f"{prefix}#{i}", kind=LOGLIKELIHOOD, prompt="", continuation=row[spec.text])
            for i, row in enumerate(rows)]


def score(spec: TaskSpec, rows: list[dict], requests: list[EvalRequest],
          responses: dict[str, EvalResponse]) -> TaskResult:
    total_nll, total_tokens, total_bytes, errors, predictions = 0.0, 0, 0, 0, []
    for row, request in zip(rows, requests, strict=True):
        response = responses[request.id]
        if response.error:
            errors += 1
            predictions.append({"id": request.id, "error": response.error})
            continue
        total_nll -= response.logprob
        total_tokens += response.num_tokens
        total_bytes += len(row[spec.text].encode("utf-8"))
        predictions.append({"id": request.id, "num_tokens": response.num_tokens, "nll": -response.logprob,
                            "perplexity": M.perplexity(-response.logprob, response.num_tokens)})
    values = {"perplexity": M.perplexity(total_nll, total_tokens),
              "nll_per_token": total_nll / total_tokens if total_tokens else float("nan"),
              "bits_per_byte": total_nll / math.log(2) / total_bytes if total_bytes else float("nan"),
              "error_rate": errors / max(1, len(rows))}
    return TaskResult(spec.name, spec.kind, len(rows), values, {}, errors, predictions,
                      {"num_tokens": total_tokens, "num_bytes": total_bytes}, description=spec.description)
