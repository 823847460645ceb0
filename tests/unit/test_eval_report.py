"""Reports (Markdown + self-contained HTML with plots), side-by-side comparison, the eval config schema,
and the demo stage's skip path."""

from __future__ import annotations

import json

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.eval import store
from rayloom.eval.compare import compare_payloads, format_table, write_comparison
from rayloom.eval.report import write_report


def _payload(run: str, em: float, ppl: float) -> dict:
    bins = [{"low": i / 10, "high": (i + 1) / 10, "count": 1 if i in (3, 8) else 0, "confidence": i / 10 + 0.05,
             "accuracy": 0.5} for i in range(10)]
    return {
        "format": store.FORMAT, "run": run, "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "path": "/m"}, "target": {"kind": "checkpoint", "endpoint_url": ""},
        "tasks": {
            "demo": {"kind": "generate", "num_examples": 4, "num_errors": 0, "description": "d",
                     "metrics": {"exact_match": em, "typo_drop": 0.1}, "stderr": {"exact_match": 0.1},
                     "details": {"robustness": {"metric": "exact_match", "scores": {"clean": em, "typo": em - 0.1}}}},
            "mc": {"kind": "multiple_choice", "num_examples": 2, "num_errors": 0, "metrics": {"acc": 0.5, "ece": 0.2},
                   "stderr": {}, "details": {"calibration": bins}},
            "ppl": {"kind": "perplexity", "num_examples": 2, "num_errors": 0, "metrics": {"perplexity": ppl},
                    "stderr": {}, "details": {}},
        },
        "metrics": {"demo/exact_match": em, "demo/typo_drop": 0.1, "mc/acc": 0.5, "mc/ece": 0.2, "ppl/perplexity": ppl},
        "gate": {"passed": False, "run": run, "checked": ["demo/exact_match"], "reason": "",
                 "failures": [{"metric": "demo/exact_match", "value": em, "threshold": 0.9, "op": ">="}]},
    }


def test_report_files_tables_and_embedded_plots(tmp_path):
    files = write_report(_payload("r1", 0.25, 40.0), tmp_path)
    md = files["markdown"].read_text()
    assert "| demo | exact_match | 0.25 | 0.1 | higher |" in md
    assert "| ppl | perplexity | 40 |  | lower |" in md
    assert "**Deploy gate: FAILED**" in md and "demo/exact_match = 0.25, needs >= 0.9" in md
    assert (tmp_path / "plots" / "metrics.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "calibration_mc.png").is_file()
    assert (tmp_path / "plots" / "robustness_demo.png").is_file()
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "Deploy gate: FAILED" in page


def test_compare_two_runs_side_by_side(tmp_path):
    before, after = _payload("base", 0.25, 40.0), _payload("tuned", 0.75, 20.0)
    rows = {r["metric"]: r for r in compare_payloads(before, after)}
    assert rows["demo/exact_match"]["delta"] == pytest.approx(0.5)
    assert rows["demo/exact_match"]["verdict"] == "better"
    assert rows["ppl/perplexity"]["verdict"] == "better"  # lower is better
    assert rows["mc/acc"]["verdict"] == "same"
    table = format_table(list(rows.values()), ("base", "fine-tuned"), ["demo/exact_match"])
    assert table.splitlines()[1].split() == ["demo/exact_match", "0.25", "0.75", "+0.5000", "better"]
    written = write_comparison(before, after, str(tmp_path / "cmp"), ("base", "fine-tuned"))
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert "| demo/exact_match | 0.25 | 0.75 | +0.5000 | better |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "cmp" / "compare.html").read_text()
    assert written["uri"].endswith("cmp")


def test_eval_presets_compose():
    assert compose("eval", []).eval.harness.tasks[:4] == ["demo_add", "demo_next", "demo_upper", "demo_repeat"]
    full = compose("eval", ["eval=full"]).eval
    assert full.human_review.export and "python_mc" in full.robustness.tasks
    endpoint = compose("eval", ["eval=endpoint"]).eval
    assert endpoint.target == "endpoint" and endpoint.endpoint_url.startswith("http")
    gated = compose("eval", ["+eval.gate.min={demo_add/exact_match:0.5}", "+eval.gate.max={heldout_text/perplexity:50}"])
    assert gated.eval.gate.min == {"demo_add/exact_match": 0.5}


@pytest.mark.parametrize("override, key", [
    ("eval.mode=compare", "eval.compare_runs"),
    ("eval.mode=review", "eval.human_review.key"),
    ("eval.target=endpoint", "eval.endpoint_url"),
    ("+eval.gate.min={exact_match:0.5}", "eval.gate"),
    ("eval.judge.enabled=true", "eval.judge.endpoint_url"),
    ("eval.robustness.perturbations=[typo,shout]", "eval.robustness.perturbations"),
    ("eval.num_replicas=0", "eval.num_replicas"),
    ("eval.human_review.kappa_weights=cubic", "eval.human_review.kappa_weights"),
    ("eval.harness.tasks=[demo_add,demo_add]", "eval.harness.tasks"),
    ("eval.harness.endpoint_api=grpc", "eval.harness.endpoint_api"),
])
def test_bad_eval_config_names_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        compose("eval", [override])


def test_demo_stage_skips_without_a_fine_tuned_model(tmp_path, capsys):
    from rayloom.recipes import DemoState
    from rayloom.recipes.demo_stages import stage_eval

    cfg = compose("run", [f"storage.root={tmp_path}"])
    state = DemoState(model_dir=tmp_path, final_model_dir=str(tmp_path))
    stage_eval(cfg, state)
    assert "skipped: no fine-tuned model yet" in capsys.readouterr().out
    assert "eval" not in state.summary
    assert not (tmp_path / "eval").exists()
