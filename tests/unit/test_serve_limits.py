"""Request limits and sampling checks: every rejection is a 4xx naming the parameter."""

from __future__ import annotations

import math

import pytest

from rayloom.serve.limits import (
    RequestLimits,
    RequestRejected,
    check_prompt_length,
    check_sampling,
    error_body,
    resolve_max_tokens,
)

LIMITS = RequestLimits(max_prompt_tokens=100, max_tokens_limit=50, default_max_tokens=20, max_model_len=128,
                       max_n=2, max_logprobs=5, max_stop_sequences=2)


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": math.nan}, "top_p"),
    ({"min_p": -0.1}, "min_p"),
    ({"presence_penalty": 2.1}, "presence_penalty"),
    ({"frequency_penalty": -math.inf}, "frequency_penalty"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"n": 0}, "n"),
    ({"n": 3}, "n"),
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
    ({"top_logprobs": 6}, "top_logprobs"),
    ({"prompt_logprobs": 10}, "prompt_logprobs"),
    ({"min_tokens": 51}, "min_tokens"),
    ({"seed": 2**70}, "seed"),
    ({"stop": ["a", "b", "c"]}, "stop"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"5": math.nan}}, "logit_bias"),
    ({"length_penalty": math.nan}, "length_penalty"),
])
def test_bad_sampling_parameters_are_rejected_naming_the_parameter(params, param):
    with pytest.raises(RequestRejected) as info:
        check_sampling(params, LIMITS)
    assert info.value.status == 400
    assert info.value.param == param
    body = info.value.body()["error"]
    assert body["param"] == param and param in body["message"] and body["type"] == "invalid_request_error"


def test_good_sampling_parameters_pass():
    check_sampling({"temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.1, "presence_penalty": -2,
                    "frequency_penalty": 2, "repetition_penalty": 1.1, "n": 2, "logprobs": True, "top_logprobs": 5,
                    "stop": ["a", "b"], "seed": -5, "logit_bias": {"12": -100}, "min_tokens": 3,
                    "max_tokens": None}, LIMITS)
    check_sampling({}, LIMITS)  # all defaults


def test_max_tokens_is_bounded_and_defaulted():
    assert resolve_max_tokens({}, LIMITS) == 20
    assert resolve_max_tokens({"max_tokens": 50}, LIMITS) == 50
    assert resolve_max_tokens({"max_completion_tokens": 7, "max_tokens": 50}, LIMITS) == 7
    for bad in (0, -3, 51, 10**9, 2.5, "10"):
        with pytest.raises(RequestRejected) as info:
            resolve_max_tokens({"max_tokens": bad}, LIMITS)
        assert info.value.status == 400 and info.value.code == "max_tokens_out_of_range"


def test_prompt_length_and_context_window():
    check_prompt_length(100, 28, LIMITS)
    with pytest.raises(RequestRejected, match="at most 100") as info:
        check_prompt_length(101, 1, LIMITS, prompt_param="prompt")
    assert info.value.param == "prompt" and info.value.code == "context_length_exceeded"
    with pytest.raises(RequestRejected, match="context window of 128") as info:
        check_prompt_length(100, 29, LIMITS)
    assert info.value.param == "max_tokens"


def test_error_body_is_openai_shaped():
    assert error_body("nope", param="x", code="y") == {
        "error": {"message": "nope", "type": "invalid_request_error", "param": "x", "code": "y"}}


def test_limits_come_from_the_serve_config():
    from rayloom.config import compose

    serve = compose("serve", ["serve.max_tokens_limit=99", "serve.max_n=3", "serve.default_max_tokens=9"]).serve
    limits = RequestLimits.from_config(serve, max_model_len=512)
    assert (limits.max_tokens_limit, limits.max_n, limits.default_max_tokens, limits.max_model_len) == (99, 3, 9, 512)


@pytest.mark.parametrize(("params", "param"), [
    ({"bad_words": ["x"] * 10_000}, "bad_words"),
    ({"allowed_token_ids": list(range(300))}, "allowed_token_ids"),
    ({"stop_token_ids": list(range(300))}, "stop_token_ids"),
    ({"logprob_token_ids": list(range(300))}, "logprob_token_ids"),
    ({"logit_bias": {str(i): 1 for i in range(300)}}, "logit_bias"),
    ({"stop": "s" * 300}, "stop"),
    ({"stop": ["ok", "s" * 300]}, "stop"),
    ({"bad_words": ["w" * 300]}, "bad_words"),
])
def test_list_fields_and_their_strings_are_bounded(params, param):
    """Security review finding 7: every list-valued field has a bounded length (and each string in it)."""
    limits = RequestLimits(max_list_items=256, max_stop_chars=256)
    with pytest.raises(RequestRejected) as caught:
        check_sampling(params, limits)
    assert caught.value.status == 400 and caught.value.param == param
    check_sampling({"bad_words": ["x"] * 256, "allowed_token_ids": list(range(256)), "stop": ["s" * 256]}, limits)
