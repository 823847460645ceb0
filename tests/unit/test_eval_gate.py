"""The deploy gate over written eval runs, the per-model index, and what `rayloom serve` calls."""

from __future__ import annotations

import dataclasses

import pytest

from rayloom.config import GROUP_SCHEMAS, compose
from rayloom.errors import UserError
from rayloom.eval import store
from rayloom.eval.gate import GateFailed, check_deploy_gate, check_gate, enforce_gate, evaluate_gate

GATE = {"min": {"demo/exact_match": 0.5}, "max": {"ppl/perplexity": 100.0}}


def _write_run(root: str, name: str, metrics: dict[str, float], model: str) -> str:
    uri = store.write_run(f"{root}/runs/{name}", {"format": store.FORMAT, "run": name, "metrics": metrics,
                                                  "tasks": {}, "model": {"path": model}}, {})
    store.record_latest(root, store.model_key(model), uri)
    return uri


def test_evaluate_gate_lists_failing_metrics():
    result = evaluate_gate({"demo/exact_match": 0.2, "ppl/perplexity": 250.0}, GATE, run="r1")
    assert not result.passed
    assert [f.metric for f in result.failures] == ["demo/exact_match", "ppl/perplexity"]
    assert "demo/exact_match = 0.2 (needs >= 0.5)" in result.message
    assert "ppl/perplexity = 250 (needs <= 100)" in result.message
    assert evaluate_gate({"demo/exact_match": 0.5, "ppl/perplexity": 99.0}, GATE).passed
    missing = evaluate_gate({"demo/exact_match": 0.9}, GATE)
    assert not missing.passed and "missing from the evaluation" in missing.message
    assert evaluate_gate({"demo/exact_match": 0.9}, {**GATE, "missing_fails": False}).passed
    assert not evaluate_gate({"demo/exact_match": float("nan")}, {"min": {"demo/exact_match": 0.0}}).passed


def test_flat_gate_form():
    result = evaluate_gate({"a/x": 1.0, "b/loss": 3.0}, {"a/x": 0.5, "max:b/loss": 2.0})
    assert [f.metric for f in result.failures] == ["b/loss"]


def test_check_gate_finds_the_models_latest_run_and_blocks_a_failing_model(tmp_path):
    root = str(tmp_path / "eval")
    model = tmp_path / "model"
    model.mkdir()
    _write_run(root, "good", {"demo/exact_match": 0.9, "ppl/perplexity": 20.0}, str(model))
    assert check_gate(model, GATE, eval_root=root).passed
    bad = _write_run(root, "bad", {"demo/exact_match": 0.1, "ppl/perplexity": 20.0}, str(model))
    result = check_gate(model, GATE, eval_root=root)
    assert not result.passed and result.run == bad
    with pytest.raises(GateFailed, match=r"demo/exact_match = 0.1 \(needs >= 0.5\)"):
        enforce_gate(str(model), GATE, eval_root=root)
    # An eval run directory is checked directly.
    assert not check_gate(bad, GATE).passed


def test_a_model_never_evaluated_fails_a_non_empty_gate(tmp_path):
    result = check_gate(tmp_path, GATE, eval_root=str(tmp_path / "eval"))
    assert not result.passed and "no evaluation of" in result.message
    assert check_gate(tmp_path, {}, eval_root=str(tmp_path / "eval")).passed


def test_check_deploy_gate_is_what_serve_calls(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = compose("serve", [f"storage.root={tmp_path}", f"serve.model_path={model}", "serve.enforce_gate=true",
                            "+eval.gate.min={demo/exact_match:0.5}"])
    _write_run(store.eval_root(cfg.storage), "r", {"demo/exact_match": 0.25}, str(model))
    with pytest.raises(GateFailed) as info:
        check_deploy_gate(cfg)
    assert isinstance(info.value, UserError)  # `rayloom serve` exits 2 with the message
    assert "demo/exact_match = 0.25" in str(info.value)
    passing = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, gate=GROUP_SCHEMAS["eval"]().gate))
    assert check_deploy_gate(passing).passed


def test_a_half_written_eval_run_is_not_read(tmp_path):
    """A folder with metrics.json that was never committed (a crashed writer, a hand-made copy) is
    not an eval run: the gate and the reports read committed versions only."""
    import json

    half = tmp_path / "half"
    half.mkdir()
    (half / store.METRICS_FILE).write_text(json.dumps({"format": store.FORMAT, "metrics": {"demo/exact_match": 1.0}}))
    assert not store.is_run(half)
    with pytest.raises(UserError, match="is not a committed rayloom artifact"):
        store.load_run(half)
    good = _write_run(str(tmp_path / "eval"), "ok", {"demo/exact_match": 0.9}, str(tmp_path / "model"))
    assert store.is_run(good) and store.load_run(good)["metrics"] == {"demo/exact_match": 0.9}
