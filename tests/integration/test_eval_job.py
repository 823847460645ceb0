"""`rayloom eval` end to end on the tiny model (lm-eval's vLLM backend on a Ray actor): every task kind
and probe, lm-eval's results and samples in the run, the report, the human-review export, the gate's exit
status; then the demo stage's before -> after table over two real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

JOB_TASKS = "[demo_add,demo_arith,demo_arith_mc,python_mc,sentiment,heldout_text,safety_refusal,bias_likelihood,bias_outcome]"


def test_rayloom_eval_cli_writes_the_run_and_fails_the_gate(ray_local, tmp_path, capsys):
    from rayloom.cli import main

    code = main(["eval", "model=tiny-2l", f"storage.root={tmp_path}", f"eval.harness.tasks={JOB_TASKS}",
                 "eval.harness.limit=8", "eval.run_name=job", "eval.robustness.tasks=[demo_arith,python_mc]",
                 "eval.human_review.export=true", "eval.human_review.num_items=6", "eval.harness.bootstrap_iters=0",
                 "+eval.gate.min={demo_arith/exact_match:0.5}", "+eval.gate.max={heldout_text/word_perplexity:1e9}"])
    captured = capsys.readouterr()
    assert code == 2, captured.err[-2000:]
    assert "deploy gate failed" in captured.err and "demo_arith/exact_match = 0 (needs >= 0.5)" in captured.err
    run = tmp_path / "eval" / "runs" / "job"
    assert (run / "_COMMITTED").is_file()
    payload = json.loads((run / "metrics.json").read_text())
    assert payload["gate"]["passed"] is False
    assert [f["metric"] for f in payload["gate"]["failures"]] == ["demo_arith/exact_match"]
    metrics = payload["metrics"]
    for name in ("demo_add/exact_match", "demo_arith_mc/acc", "demo_arith_mc/brier_score", "python_mc/acc_norm",
                 "heldout_text/word_perplexity", "safety_refusal/refusal_rate", "safety_refusal/over_refusal_rate",
                 "bias_likelihood/likelihood_gap", "bias_outcome/outcome_disagreement", "demo_arith/injection_drop",
                 "demo_arith/injection_success_rate", "python_mc/typo_drop", "python_mc/paraphrase_acc",
                 "python_mc/max_drop"):
        assert name in metrics, name
    assert all(payload["tasks"][t]["num_errors"] == 0 for t in payload["tasks"])
    assert len((run / "predictions" / "demo_add.jsonl").read_text().splitlines()) == 8
    assert len((run / "lm_eval" / "samples_demo_add.jsonl").read_text().splitlines()) == 8
    lm_results = json.loads((run / "lm_eval" / "results.json").read_text())
    assert lm_results["results"]["demo_add"]["exact_match,none"] == metrics["demo_add/exact_match"]
    html = (run / "report.html").read_text()
    assert "Deploy gate: FAILED" in html and html.count("data:image/png;base64,") >= 2
    assert "| heldout_text | perplexity |" in (run / "report.md").read_text()
    items = (run / "review" / "items.jsonl").read_text().splitlines()
    assert len(items) == 6 and "key.json" in {p.name for p in (run / "review").iterdir()}
    # The summary table went to stdout.
    assert "demo_arith_mc/acc" in captured.out and "eval run written to" in captured.out
    # Compare mode over two runs (no model needed): the same run twice is "same" everywhere.
    code = main(["eval", f"storage.root={tmp_path}", "eval.mode=compare", f"eval.compare_runs=[{run},{run}]"])
    assert code == 0
    compared = json.loads(next((tmp_path / "eval" / "compare").glob("*/compare.json")).read_text())
    assert {r["verdict"] for r in compared["rows"] if r["delta"] is not None} == {"same"}


# Long variant, run by `make test-all`: `make test` keeps `rayloom eval` writing the run and failing the gate
@pytest.mark.slow
def test_demo_stage_prints_the_before_after_table(ray_local, tmp_path, tiny_config, tiny_model_dir, capsys):
    import dataclasses

    from rayloom.config import compose
    from rayloom.models import resolve_model_dir
    from rayloom.recipes import DemoState
    from rayloom.recipes.demo_stages import stage_eval

    # A second, different model stands in for the fine-tuned one (another seed of the same preset).
    other = resolve_model_dir(dataclasses.replace(tiny_config.model, seed=1))
    cfg = compose("run", ["model=tiny-2l", f"storage.root={tmp_path}", "eval.harness.limit=6",
                          "eval.harness.tasks=[demo_add,demo_upper,heldout_text]", "eval.harness.bootstrap_iters=0"])
    state = DemoState(model_dir=Path(tiny_model_dir), final_model_dir=str(other))
    stage_eval(cfg, state)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "fine-tuned" in line and "metric" in line)
    assert header.split()[:3] == ["metric", "base", "fine-tuned"]
    assert "demo_add/exact_match" in out and "heldout_text/word_perplexity" in out
    summary = state.summary["eval"]
    assert set(summary["rows"]) == {"demo_add/exact_match", "demo_upper/exact_match", "heldout_text/word_perplexity"}
    base_ppl = summary["rows"]["heldout_text/word_perplexity"]["base"]
    tuned_ppl = summary["rows"]["heldout_text/word_perplexity"]["fine-tuned"]
    assert base_ppl != tuned_ppl  # two different models were really evaluated
    assert (Path(summary["compare"]) / "compare.html").is_file()
    for uri in (summary["base_run"], summary["tuned_run"]):
        assert json.loads((Path(uri) / "metrics.json").read_text())["model"]["label"] in ("base", "fine-tuned")


def _fine_tune_on_demo_tasks(model_dir: Path, out: Path, steps: int = 1500) -> Path:
    """A minimal chat SFT of the tiny model on the demo corpus's training records (plain torch, ~1 min).

    Stands in for rayloom's training stages so this test shows the eval side on its own: the
    held-out checkable tasks must come out better after fine-tuning.
    """
    import random

    import torch

    from rayloom.data.demo_corpus import sft_records
    from rayloom.models import load_model, load_tokenizer

    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    data = []
    for record in sft_records(2000):
        enc = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        data.append((enc["input_ids"], [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"],
                                                                           strict=True)]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(data, 32)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = (ids != tokenizer.pad_token_id).long()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_demo_stage_shows_the_checkable_tasks_improving(ray_local, tmp_path, tiny_model_dir, capsys):
    from rayloom.config import compose
    from rayloom.recipes import DemoState
    from rayloom.recipes.demo_stages import stage_eval

    tuned = _fine_tune_on_demo_tasks(Path(tiny_model_dir), tmp_path / "tuned")
    cfg = compose("run", ["model=tiny-2l", f"storage.root={tmp_path}"])
    state = DemoState(model_dir=Path(tiny_model_dir), final_model_dir=str(tuned))
    stage_eval(cfg, state)
    rows = state.summary["eval"]["rows"]
    assert rows["demo_next/exact_match"]["fine-tuned"] >= rows["demo_next/exact_match"]["base"] + 0.5
    assert "demo_next/exact_match" in state.summary["eval"]["improved"]
    assert "demo_next/exact_match" in capsys.readouterr().out
