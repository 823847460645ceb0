"""Prompt token counts at the ingress match what the engine sees (same tokenizer, same chat template)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayloom.models import load_tokenizer
from rayloom.serve.prompt_tokens import (
    UnsupportedContent,
    count_chat_tokens,
    count_completion_tokens,
    load_serving_tokenizer,
)


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


def test_chat_count_covers_tools_documents_and_other_message_fields(tiny_model_dir):
    """Security review finding 7: what the template may render besides role and text counts too,
    so max_prompt_tokens cannot be bypassed by moving the prompt into tools or tool calls."""
    tokenizer = load_tokenizer(tiny_model_dir)
    messages = [{"role": "user", "content": "hi"}]
    base = count_chat_tokens(tokenizer, messages)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "word " * 2000,
                                                "parameters": {"type": "object", "properties": {}}}}]
    assert count_chat_tokens(tokenizer, messages, tools=tools) > base + 2000
    assert count_chat_tokens(tokenizer, messages, documents=[{"text": "word " * 500}]) > base + 500
    with_calls = messages + [{"role": "assistant", "content": None,
                              "tool_calls": [{"id": "1", "type": "function",
                                              "function": {"name": "f", "arguments": "word " * 300}}]}]
    assert count_chat_tokens(tokenizer, with_calls) > base + 300


def test_non_text_content_parts_are_refused(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    for part in ({"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}},
                 {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}):
        with pytest.raises(UnsupportedContent, match=part["type"]):
            count_chat_tokens(tokenizer, [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
