"""Task scoring from given answers (no engine): generation, multiple choice, perplexity, refusal, bias,
robustness merge, the judge's score parsing and the optional lm-eval dependency."""

from __future__ import annotations

import json
import math

import pytest

from rayloom.config import EvalConfig
from rayloom.errors import UserError
from rayloom.eval.request_plan import build_plans, score_plans
from rayloom.eval.requests import EvalResponse
from rayloom.eval.tasks import TaskRegistry, parse_task


def _registry(tmp_path, name, entry, rows) -> TaskRegistry:
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskRegistry({name: parse_task(name, {**entry, "data": f"{name}.jsonl"}, tmp_path / "t.yaml")})


def _score(registry, answers, **cfg_kwargs):
    cfg = EvalConfig(tasks=registry.names(), **cfg_kwargs)
    plans = build_plans(cfg, registry)
    requests = [r for p in plans for r in p.requests]
    responses = {r.id: answers(r) for r in requests}
    return score_plans(plans, responses, cfg), requests


def test_generation_exact_match_and_corpus_metrics(tmp_path):
    registry = _registry(tmp_path, "gen", {"kind": "generate", "template": "demo_arith", "shots": 0,
                                           "metrics": ["exact_match", "contains", "bleu", "rouge"]},
                         [{"question": "1 + 1", "answer": "2"}, {"question": "2 + 2", "answer": "4"},
                          {"question": "3 + 3", "answer": "6"}, {"question": "4 + 4", "answer": "8"}])
    replies = {"1 + 1": "2", "2 + 2": "4.", "3 + 3": "It is 6", "4 + 4": "9"}

    def answer(request):
        question = request.messages[-1]["content"][len("What is "):-1]
        return EvalResponse(request.id, text=replies[question])

    results, _ = _score(registry, answer)
    metrics = results["gen"].metrics
    assert metrics["exact_match"] == 0.5
    assert metrics["contains"] == 0.75
    assert 0 < metrics["rouge1"] < 1
    assert metrics["error_rate"] == 0
    assert results["gen"].predictions[2]["response"] == "It is 6"


def test_multiple_choice_accuracy_by_log_likelihood(tmp_path):
    registry = _registry(tmp_path, "mc", {"kind": "multiple_choice", "format": "text", "prompt": "{q}"},
                         [{"q": "a", "choices": ["x", "y"], "answer": 0},
                          {"q": "b", "choices": ["x", "y", "z"], "answer": "z"},
                          {"q": "c", "choices": ["x", "y"], "answer": 1}])
    # Log-likelihoods per (row, choice): row a picks x (right), row b picks y (wrong), row c picks y (right).
    table = {"mc#0#c0": -1.0, "mc#0#c1": -2.0, "mc#1#c0": -3.0, "mc#1#c1": -0.5, "mc#1#c2": -1.0,
             "mc#2#c0": -4.0, "mc#2#c1": -0.1}
    results, requests = _score(registry, lambda r: EvalResponse(r.id, logprob=table[r.id], num_tokens=1))
    assert [r.continuation for r in requests[:2]] == [" x", " y"]
    metrics = results["mc"].metrics
    assert metrics["acc"] == pytest.approx(2 / 3)
    assert results["mc"].details["calibration"]
    confidence_a = 1 / (1 + math.exp(-1))
    assert results["mc"].predictions[0]["confidence"] == pytest.approx(confidence_a)


def test_perplexity_is_token_weighted(tmp_path):
    registry = _registry(tmp_path, "ppl", {"kind": "perplexity", "format": "text"},
                         [{"text": "aaaa"}, {"text": "bb"}])
    nll = {"ppl#0": (3 * math.log(2), 3), "ppl#1": (1 * math.log(8), 1)}
    results, requests = _score(registry, lambda r: EvalResponse(r.id, logprob=-nll[r.id][0], num_tokens=nll[r.id][1]))
    assert requests[0].prompt == "" and requests[0].continuation == "aaaa"
    # exp((3 ln 2 + ln 8) / 4) = exp(6 ln 2 / 4) = 2 ** 1.5
    assert results["ppl"].metrics["perplexity"] == pytest.approx(2**1.5)
    assert results["ppl"].metrics["bits_per_byte"] == pytest.approx(6 / 6)


def test_refusal_and_over_refusal(tmp_path):
    registry = _registry(tmp_path, "safety", {"kind": "refusal", "template": "assistant",
                                              "variables": {"message": "prompt"}},
                         [{"prompt": "bad 1", "should_refuse": True}, {"prompt": "bad 2", "should_refuse": True},
                          {"prompt": "ok 1", "should_refuse": False}, {"prompt": "ok 2", "should_refuse": False}])
    replies = {"bad 1": "I'm sorry, but I can't help with that.", "bad 2": "Sure, here is how",
               "ok 1": "I cannot assist with that.", "ok 2": "Use kill -9."}
    results, _ = _score(registry, lambda r: EvalResponse(r.id, text=replies[r.messages[-1]["content"]]))
    metrics = results["safety"].metrics
    assert metrics["refusal_rate"] == 0.5
    assert metrics["over_refusal_rate"] == 0.5
    assert metrics["safety_accuracy"] == 0.5


def test_bias_likelihood_gap_and_outcome_disagreement(tmp_path):
    registry = _registry(tmp_path, "bias", {"kind": "bias", "format": "text"},
                         [{"context": "The {term} is", "terms": ["a", "b"], "continuation": " kind.", "category": "g"},
                          {"context": "The {term} was", "terms": ["a", "b"], "continuation": " here.", "category": "g"}])
    table = {"bias#0#t0": -2.0, "bias#0#t1": -3.0, "bias#1#t0": -4.0, "bias#1#t1": -3.0}
    results, requests = _score(registry, lambda r: EvalResponse(r.id, logprob=table[r.id], num_tokens=2))
    assert requests[0].prompt == "The a is" and requests[0].continuation == " kind."
    metrics = results["bias"].metrics
    assert metrics["likelihood_gap"] == pytest.approx(0.5)  # per token: |−1 − (−1.5)|, |−2 − (−1.5)|
    assert metrics["preference_skew"] == pytest.approx(0.0)  # the first term wins one of two pairs
    outcome = _registry(tmp_path, "out", {"kind": "bias", "template": "assistant", "variables": {"message": "context"}},
                        [{"context": "Hire the {term}?", "terms": ["a", "b"]},
                         {"context": "Promote the {term}?", "terms": ["a", "b"]}])
    replies = {"Hire the a?": "Yes.", "Hire the b?": "yes", "Promote the a?": "Yes", "Promote the b?": "No"}
    results, _ = _score(outcome, lambda r: EvalResponse(r.id, text=replies[r.messages[-1]["content"]]))
    assert results["out"].metrics["outcome_disagreement"] == 0.5


def test_robustness_drop_and_injection_success(tmp_path):
    registry = _registry(tmp_path, "gen", {"kind": "generate", "template": "demo_arith", "shots": 0,
                                           "metrics": ["exact_match"], "paraphrases": ["Compute {question}."]},
                         [{"question": "one + one", "answer": "2"}, {"question": "two + two", "answer": "4"}])

    def answer(request):
        text = request.messages[-1]["content"]
        if "PWNED" in text:
            return EvalResponse(request.id, text="PWNED")
        if text.startswith("Compute") or "ONE" in text:
            return EvalResponse(request.id, text="0")
        return EvalResponse(request.id, text="2" if "one" in text or "oen" in text or "noe" in text else "4")

    cfg = {"robustness": EvalConfig().robustness}
    cfg["robustness"].tasks = ["gen"]
    results, _ = _score(registry, answer, **cfg)
    metrics = results["gen"].metrics
    assert metrics["exact_match"] == 1.0
    assert metrics["injection_exact_match"] == 0.0 and metrics["injection_drop"] == 1.0
    assert metrics["injection_success_rate"] == 1.0
    assert metrics["paraphrase_drop"] == 1.0
    assert metrics["case_exact_match"] == 0.5
    assert metrics["max_drop"] == 1.0
    assert results["gen"].details["robustness"]["scores"]["clean"] == 1.0


def test_judge_score_parsing():
    from rayloom.eval.judge import parse_score

    assert parse_score("4", 1, 5) == 4
    assert parse_score("Score: 9/10 -> 3", 1, 5) == 3
    assert parse_score("no idea", 1, 5) is None


def test_lm_eval_absent_is_a_clear_error():
    import importlib.util

    from rayloom.eval.lm_harness import INSTALL_HINT, flatten_results, require_lm_eval

    if importlib.util.find_spec("lm_eval") is None:
        with pytest.raises(UserError, match="pip install"):
            require_lm_eval()
        assert "lm-eval" in INSTALL_HINT
    assert flatten_results({"hellaswag": {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": "hellaswag"}}) == {
        "lm_eval:hellaswag": {"acc": 0.5}}


def test_unreachable_endpoint_is_a_clear_error():
    import socket

    from rayloom.eval.endpoint_target import EndpointTarget

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = EvalConfig(target="endpoint", endpoint_url=f"http://127.0.0.1:{port}", request_timeout_s=5)
    with pytest.raises(UserError, match="cannot reach the endpoint"):
        EndpointTarget(cfg)
