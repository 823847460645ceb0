"""Prompt token counts at the ingress match what the engine sees (same tokenizer, same chat template)."""

from __future__ import annotations

from pathlib import Path

from rayloom.models import load_tokenizer
from rayloom.serve.prompt_tokens import count_chat_tokens, count_completion_tokens, load_serving_tokenizer


def test_chat_count_is_the_rendered_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    expected = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert count_chat_tokens(tokenizer, messages) == len(expected)
    # Content given as parts counts its text parts.
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}]
    assert count_chat_tokens(tokenizer, parts) == count_chat_tokens(tokenizer, messages[1:])


def test_completion_counts_for_every_prompt_form(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    text_count = len(tokenizer.encode("import os"))
    assert count_completion_tokens(tokenizer, "import os") == [text_count]
    assert count_completion_tokens(tokenizer, ["import os", "x"]) == [text_count, len(tokenizer.encode("x"))]
    assert count_completion_tokens(tokenizer, [5, 6, 7]) == [3]
    assert count_completion_tokens(tokenizer, [[5, 6], [7]]) == [2, 1]
    assert count_completion_tokens(tokenizer, None) == []


def test_tokenizer_from_s3_downloads_tokenizer_files_only(s3_server, tiny_model_dir, tmp_path):
    from rayloom import storage

    uri = f"s3://{s3_server['bucket']}/tok/model"
    storage.commit_dir(tiny_model_dir, uri)
    tokenizer = load_serving_tokenizer(uri, tmp_path)
    assert tokenizer.encode("import os") == load_tokenizer(tiny_model_dir).encode("import os")
    fetched = {p.name for p in Path(tmp_path).rglob("*") if p.is_file()}
    assert "tokenizer.json" in fetched and not any(name.endswith(".safetensors") for name in fetched)
