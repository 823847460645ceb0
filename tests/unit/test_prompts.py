"""The prompt template registry (conf/prompts): zero-/few-shot rendering and the model's chat template."""

from __future__ import annotations

import pytest

from rayloom.errors import UserError
from rayloom.prompts import load_registry, parse_ref, render, to_prompt


def test_shipped_templates_load_with_examples():
    registry = load_registry()
    assert {"demo_arith", "qa", "sentiment", "summarize", "assistant"} <= set(registry.names())
    arith = registry.get("demo_arith")
    assert arith.variables == ("question",) and len(arith.examples) >= 4
    for name in registry.names():  # every template renders zero-shot and with all its examples
        template = registry.get(name)
        values = {v: "x" for v in template.variables}
        assert template.messages(0, **values)[-1]["role"] == "user"
        assert len(template.messages(len(template.examples), **values)) >= len(template.examples) * 2 + 1


def test_zero_and_few_shot_rendering():
    zero = render("demo_arith", question="2 + 2")
    assert zero == [{"role": "system", "content": "You are a careful calculator. Reply with the number only."},
                    {"role": "user", "content": "What is 2 + 2?"}]
    few = render("demo_arith@2", question="5 + 5")
    assert [m["role"] for m in few] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert few[1] == {"role": "user", "content": "What is 2 + 3?"} and few[2] == {"role": "assistant", "content": "5"}
    assert render("demo_arith", shots=3, question="1 + 1") == render("demo_arith@3", question="1 + 1")


def test_the_question_asked_is_never_one_of_its_shots():
    messages = render("demo_arith@2", question="2 + 3")  # the first example's question
    shown = [m["content"] for m in messages[1:-1]]
    assert "What is 2 + 3?" not in shown and len(shown) == 4


def test_rendering_errors_name_the_problem():
    with pytest.raises(UserError, match="unknown prompt template 'nope'.*demo_arith"):
        render("nope", question="x")
    with pytest.raises(UserError, match="missing \\['question'\\]"):
        render("demo_arith")
    with pytest.raises(UserError, match="unknown \\['quest'\\]"):
        render("demo_arith", question="1", quest="2")
    with pytest.raises(UserError, match="usable examples"):
        render("demo_arith@99", question="1")
    with pytest.raises(UserError, match="name@<shots>"):
        parse_ref("demo_arith@few")


def test_registry_files_are_validated(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nuser: '{q}'\nexamples:\n  - {q: one}\n")
    with pytest.raises(UserError, match="a.yaml: examples\\[0\\] lacks \\['answer'\\]"):
        load_registry(tmp_path)
    (tmp_path / "a.yaml").write_text("name: a\nuser: '{q}'\ntypo_key: 1\n")
    with pytest.raises(UserError, match="unknown keys \\['typo_key'\\]"):
        load_registry(tmp_path)
    (tmp_path / "a.yaml").write_text("name: a\nuser: 'Q: {q}'\nassistant: 'A: {a}'\nexamples: [{q: '1', a: '2'}]\n")
    (tmp_path / "b.yaml").write_text("name: a\nuser: x\n")
    with pytest.raises(UserError, match="defined twice"):
        load_registry(tmp_path)
    (tmp_path / "b.yaml").unlink()
    assert load_registry(tmp_path).render("a@1", q="3")[-2:] == [{"role": "assistant", "content": "A: 2"},
                                                                  {"role": "user", "content": "Q: 3"}]


def test_prompt_text_comes_from_the_models_chat_template(tiny_model_dir):
    from rayloom.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    registry = load_registry()
    text = registry.render_text("demo_arith@1", tokenizer, question="4 + 4")
    assert text == to_prompt(registry.render("demo_arith@1", question="4 + 4"), tokenizer)
    assert text.startswith("<s><|system|>\n") and text.endswith("What is 4 + 4?<|end|>\n<|assistant|>\n")
