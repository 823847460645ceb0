"""Request limits and sampling-parameter checks, as plain functions over the request's fields.

Why here and not only in vLLM: vLLM validates sampling parameters inside the engine replica,
after the request crossed the ingress and was queued. Checking at the ingress rejects bad or
oversized requests before they cost engine time, enforces this deployment's own bounds
(max_tokens, prompt length, n, logprobs) that vLLM does not know about, and gives every
rejection the same OpenAI-style error body. vLLM's own checks stay in place behind these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayloom.config import ServeConfig


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int = 768
    max_tokens_limit: int = 256
    default_max_tokens: int = 128
    # The engine's context window (prompt + completion).
    max_model_len: int = 1024
    max_n: int = 4
    max_logprobs: int = 20
    max_stop_sequences: int = 8
    max_stop_chars: int = 256
    max_list_items: int = 256
    max_messages: int = 256
    max_batch_prompts: int = 16

    @classmethod
    def from_config(cls, serve: ServeConfig, max_model_len: int | None = None) -> RequestLimits:
        return cls(max_body_bytes=serve.max_body_bytes, max_prompt_tokens=serve.max_prompt_tokens,
                   max_tokens_limit=serve.max_tokens_limit, default_max_tokens=serve.default_max_tokens,
                   max_model_len=max_model_len or serve.max_model_len, max_n=serve.max_n,
                   max_logprobs=serve.max_logprobs, max_stop_sequences=serve.max_stop_sequences,
                   max_stop_chars=serve.max_stop_chars, max_list_items=serve.max_list_items,
                   max_messages=serve.max_messages, max_batch_prompts=serve.max_batch_prompts)


class RequestRejected(Exception):
    """A request the endpoint refuses, with its HTTP status and OpenAI-style error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The error JSON the OpenAI API returns (and its clients parse)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Request fields that are lists (or maps) of tokens or strings; each has at most max_list_items entries.
LIST_FIELDS = ("bad_words", "allowed_token_ids", "stop_token_ids", "logit_bias", "logprob_token_ids")


def _bad(param: str, message: str, code: str = "invalid_value") -> RequestRejected:
    return RequestRejected(400, f"{param}: {message}", param=param, code=code)


def _number(params: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _bad(name, f"must be a finite number, got {value!r}")
    return float(value)


def _in_range(params: Mapping[str, Any], name: str, low: float, high: float, *, low_open: bool = False) -> None:
    value = _number(params, name)
    if value is None:
        return
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        raise _bad(name, f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")


def _int_in_range(params: Mapping[str, Any], name: str, low: int, high: int, code: str = "invalid_value") -> None:
    value = params.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"must be an integer, got {value!r}", code)
    if not low <= value <= high:
        raise _bad(name, f"must be in [{low}, {high}], got {value}", code)


def check_sampling(params: Mapping[str, Any], limits: RequestLimits) -> None:
    """Raise RequestRejected (400) for any sampling parameter out of range or not finite."""
    _in_range(params, "temperature", 0.0, 2.0)
    _in_range(params, "top_p", 0.0, 1.0, low_open=True)
    _in_range(params, "min_p", 0.0, 1.0)
    _in_range(params, "presence_penalty", -2.0, 2.0)
    _in_range(params, "frequency_penalty", -2.0, 2.0)
    _in_range(params, "repetition_penalty", 0.0, 2.0, low_open=True)
    _number(params, "length_penalty")
    # vLLM reads 0 and -1 as "no top-k".
    _int_in_range(params, "top_k", -1, 1_000_000)
    _int_in_range(params, "n", 1, limits.max_n)
    _int_in_range(params, "top_logprobs", 0, limits.max_logprobs)
    _int_in_range(params, "prompt_logprobs", 0, limits.max_logprobs)
    if not isinstance(params.get("logprobs"), bool):  # chat: a bool; completions: a count
        _int_in_range(params, "logprobs", 0, limits.max_logprobs)
    _int_in_range(params, "min_tokens", 0, limits.max_tokens_limit)
    _int_in_range(params, "seed", -(2**63), 2**63 - 1)
    stop = params.get("stop")
    if isinstance(stop, list) and len(stop) > limits.max_stop_sequences:
        raise _bad("stop", f"at most {limits.max_stop_sequences} stop sequences, got {len(stop)}")
    _check_strings(params, "stop", limits.max_stop_chars)
    _check_strings(params, "bad_words", limits.max_stop_chars)
    # Every list-valued field is bounded: vLLM builds per-token structures from each of them.
    for name in LIST_FIELDS:
        value = params.get(name)
        if value is not None and hasattr(value, "__len__") and len(value) > limits.max_list_items:
            raise _bad(name, f"at most {limits.max_list_items} entries, got {len(value)}", "too_many_items")
    logit_bias = params.get("logit_bias") or {}
    for token, bias in logit_bias.items():
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias) \
                or not -100 <= bias <= 100:
            raise _bad("logit_bias", f"bias for token {token} must be a number in [-100, 100], got {bias!r}")


def _check_strings(params: Mapping[str, Any], name: str, max_chars: int) -> None:
    value = params.get(name)
    for item in [value] if isinstance(value, str) else (value or []):
        if isinstance(item, str) and len(item) > max_chars:
            raise _bad(name, f"each entry must have at most {max_chars} characters, got {len(item)}")


def resolve_max_tokens(params: Mapping[str, Any], limits: RequestLimits) -> int:
    """The completion budget of a request: its max_completion_tokens/max_tokens, or the default.

    Always bounded: a request without a budget would otherwise run to the end of the context.
    """
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, f"must be an integer, got {value!r}", "max_tokens_out_of_range")
        if not 1 <= value <= limits.max_tokens_limit:
            raise _bad(name, f"must be in [1, {limits.max_tokens_limit}] on this endpoint, got {value}",
                       "max_tokens_out_of_range")
        return value
    return limits.default_max_tokens


def check_prompt_length(num_prompt_tokens: int, max_tokens: int, limits: RequestLimits, *,
                        prompt_param: str = "messages") -> None:
    if num_prompt_tokens > limits.max_prompt_tokens:
        raise RequestRejected(400, f"the prompt has {num_prompt_tokens} tokens; this endpoint accepts at most "
                                   f"{limits.max_prompt_tokens}", param=prompt_param, code="context_length_exceeded")
    if num_prompt_tokens + max_tokens > limits.max_model_len:
        raise RequestRejected(400, f"prompt ({num_prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                                   f"context window of {limits.max_model_len} tokens; lower max_tokens",
                              param="max_tokens", code="context_length_exceeded")
