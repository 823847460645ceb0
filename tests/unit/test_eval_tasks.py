"""The task registry, prompt rendering (serving's template registry and inline text), and request plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayloom.config import EvalConfig
from rayloom.errors import UserError
from rayloom.eval.prompt_builder import PromptBuilder
from rayloom.eval.request_plan import all_requests, build_plans
from rayloom.eval.robustness import perturb_values, typo
from rayloom.eval.tasks import load_examples, load_task_registry, parse_task


def test_every_shipped_task_loads_and_renders():
    registry = load_task_registry()
    assert {"demo_add", "demo_arith", "python_mc", "heldout_text", "safety_refusal", "safety_heldout",
            "bias_likelihood"} <= set(
        registry.names())
    cfg = EvalConfig(tasks=registry.names(), max_examples=5)
    plans = build_plans(cfg, registry)
    requests = all_requests(plans)
    assert {p.spec.name for p in plans} == set(registry.names())
    assert all(r.prompt or r.messages or r.continuation for r in requests)


def test_chat_tasks_use_the_serving_template_registry_zero_and_few_shot():
    from rayloom.prompts import load_registry

    registry = load_task_registry()
    prompts = load_registry()
    zero = PromptBuilder(registry.get("demo_arith"), [], prompts)
    few = PromptBuilder(registry.get("demo_arith_fewshot"), [], prompts)
    row = {"question": "20 - 9", "answer": "11"}
    assert zero.chat(zero.values(row)) == prompts.render("demo_arith", question="20 - 9")
    messages = few.chat(few.values(row))
    assert messages == prompts.render("demo_arith@3", question="20 - 9")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]


def test_demo_tasks_follow_the_demo_corpus_held_out_split():
    from rayloom.data.demo_corpus import demo_eval_examples

    registry = load_task_registry()
    rows = load_examples(registry.get("demo_add"), None, {"num": 40, "seed": 1})
    expected = [e for e in demo_eval_examples(num=40, seed=1) if e["task"] == "add"]
    assert rows == expected
    builder = PromptBuilder(registry.get("demo_add"), [])
    # The SFT records carry the prompt as the only user turn, no system text: so does the eval.
    assert builder.chat(builder.values(rows[0])) == [{"role": "user", "content": rows[0]["prompt"]}]


def test_text_few_shot_prompt_for_multiple_choice(tmp_path):
    data = tmp_path / "mc.jsonl"
    rows = [{"q": f"q{i}", "choices": ["a", "b"], "answer": i % 2} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = parse_task("mc", {"kind": "multiple_choice", "format": "text", "data": "mc.jsonl",
                             "prompt": "Q: {q}\nA:", "shots": 2}, tmp_path / "tasks.yaml")
    examples = load_examples(spec)
    assert [r["q"] for r in examples] == ["q2", "q3"]  # the first two rows are the shots
    cfg = EvalConfig(tasks=["mc"])
    from rayloom.eval.tasks import TaskRegistry

    plans = build_plans(cfg, TaskRegistry({"mc": spec}))
    first = plans[0].requests[0]
    assert first.prompt == "Q: q0\nA: a\n\nQ: q1\nA: b\n\nQ: q2\nA:"
    assert [r.continuation for r in plans[0].requests[:2]] == [" a", " b"]


def test_perplexity_rows_are_chunked(tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "line one\n" * 30}) + "\n")
    spec = parse_task("ppl", {"kind": "perplexity", "format": "text", "data": "text.jsonl", "max_chars": 50},
                      tmp_path / "t.yaml")
    chunks = load_examples(spec)
    assert all(len(c["text"]) <= 50 for c in chunks)
    assert "".join(c["text"] for c in chunks) == "line one\n" * 30


@pytest.mark.parametrize("entry, message", [
    ({"kind": "generate", "data": "x.jsonl", "template": "qa", "metrics": ["accuracy"]}, "metrics"),
    ({"kind": "classify", "data": "x.jsonl"}, "kind="),
    ({"kind": "generate", "template": "qa", "metrics": ["exact_match"]}, "'data' is required"),
    ({"kind": "generate", "data": "x.jsonl", "template": "qa", "metrics": ["bleu"], "colour": 1}, "unknown keys"),
    ({"kind": "generate", "format": "text", "data": "x.jsonl", "metrics": ["bleu"]}, "prompt inline"),
    ({"kind": "multiple_choice", "data": "x.jsonl", "template": "qa", "metrics": ["acc"]}, "metrics are fixed"),
])
def test_bad_task_entries_name_the_problem(entry, message, tmp_path):
    with pytest.raises(UserError, match=message):
        parse_task("bad", entry, tmp_path / "tasks.yaml")


def test_unknown_task_and_missing_data_file(tmp_path):
    registry = load_task_registry()
    with pytest.raises(UserError, match="unknown eval task 'nope'"):
        registry.get("nope")
    spec = parse_task("gone", {"kind": "perplexity", "format": "text", "data": "gone.jsonl"}, tmp_path / "t.yaml")
    with pytest.raises(UserError, match="does not exist"):
        load_examples(spec)
    (tmp_path / "gone.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="line 1 is not JSON"):
        load_examples(spec)


def test_extra_task_dirs_and_duplicates(tmp_path):
    (tmp_path / "mine.yaml").write_text("my_ppl:\n  kind: perplexity\n  format: text\n  data: t.jsonl\n")
    registry = load_task_registry([str(tmp_path)])
    assert registry.get("my_ppl").data == str(Path(tmp_path, "t.jsonl").resolve())
    (tmp_path / "dup.yaml").write_text("python_mc:\n  kind: perplexity\n  format: text\n  data: t.jsonl\n")
    with pytest.raises(UserError, match="defined twice"):
        load_task_registry([str(tmp_path)])


def test_perturbations_change_inputs_not_answers():
    assert typo("Which keyword defines a function?", 0.1) == typo("Which keyword defines a function?", 0.1)
    changed = typo("Which keyword defines a function?", 0.1)
    assert changed != "Which keyword defines a function?"
    assert typo("20 - 9", 0.5) == "20 - 9"  # digits and operators are never edited
    cfg = EvalConfig().robustness
    assert perturb_values({"question": "what is def"}, "case", cfg, 0) == {"question": "WHAT IS DEF"}
    injected = perturb_values({"question": "2 + 2"}, "injection", cfg, 0)["question"]
    assert injected.startswith("2 + 2 ") and "PWNED" in injected


def test_robustness_plans_cover_each_perturbation():
    registry = load_task_registry()
    cfg = EvalConfig(tasks=["python_mc"], max_examples=3)
    cfg.robustness.tasks = ["python_mc"]
    plans = build_plans(cfg, registry)
    variants = [p.variant for p in plans]
    assert variants.count("paraphrase") == len(registry.get("python_mc").paraphrases)
    assert {"", "typo", "case", "injection"} <= set(variants)
    cfg.robustness.tasks = ["heldout_text"]
    with pytest.raises(UserError, match="robustness"):
        build_plans(cfg, registry)
