"""Count prompt tokens at the ingress, with the model's own tokenizer and chat template.

The ingress rejects over-long prompts before they reach an engine replica, so it needs the
token count the engine would see: chat messages are rendered with the tokenizer's chat
template (as vLLM renders them), completion prompts are encoded as vLLM encodes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rayloom import storage

log = logging.getLogger(__name__)

# What AutoTokenizer needs from a model directory (not the weights).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "config.json",
                    "added_tokens.json", "generation_config.json")


def load_serving_tokenizer(source: str, cache_dir: str | Path):
    """The tokenizer of a local model directory, an s3:// model (tokenizer files only) or a hub id."""
    from transformers import AutoTokenizer  # here: transformers is heavy; only replicas load tokenizers

    if storage.is_s3(source):
        # The committed version's tokenizer files only, verified against the marker (never half an export).
        source = str(storage.download_committed(source, Path(cache_dir).expanduser() / "tokenizers",
                                                only=_TOKENIZER_FILES, what="the served model's tokenizer:"))
    return AutoTokenizer.from_pretrained(source)


class UnsupportedContent(ValueError):
    """A content part this text-only endpoint does not take (images, audio, files)."""


def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of text parts (anything else is refused).

    Non-text parts are refused rather than skipped: skipped, they would not count against
    max_prompt_tokens, and vLLM would fetch image/audio URLs server-side.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, Iterable) else [content]:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text":
            raise UnsupportedContent(f"content parts of type {kind!r} are not accepted (text only)")
        parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def _extras(message: dict, skip: Iterable[str] = ("role", "content")) -> str:
    """Every other field of a message (tool_calls, name, tool_call_id, ...) as the JSON the engine sees."""
    extra = {k: v for k, v in message.items() if k not in skip and v is not None}
    return json.dumps(extra, default=str) if extra else ""


def count_chat_tokens(tokenizer, messages: Sequence[Any], *, tools: Any = None, documents: Any = None) -> int:
    """Prompt tokens of a chat request: the chat template over roles and text, plus the JSON of
    tools, documents and non-content message fields (a template may render them or not; counting
    them always keeps max_prompt_tokens an upper bound a client cannot get around)."""
    dicts = [dict(m) for m in messages]
    plain = [{"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))} for m in dicts]
    extra_text = "".join(_extras(m) for m in dicts)
    for value in (tools, documents):
        if value:
            extra_text += json.dumps([_plain(v) for v in value], default=str)
    extra = len(tokenizer.encode(extra_text, add_special_tokens=False)) if extra_text else 0
    try:
        ids = tokenizer.apply_chat_template(plain, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return len(ids) + extra
    except Exception as exc:  # a template that rejects these roles: the engine will say why
        log.debug("chat template failed (%s); counting message contents only", exc)
        return extra + sum(len(tokenizer.encode(m["role"] + m["content"], add_special_tokens=False)) for m in plain)


def _plain(value: Any) -> Any:
    """A pydantic model (a tool definition) as the dict vLLM renders; anything else unchanged."""
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if callable(dump) else value


def chat_size(messages: Sequence[Any]) -> int:
    """Characters of a chat request's messages (every field), to decide where to count them."""
    return sum(len(str(dict(m))) for m in messages)


def count_completion_tokens(tokenizer, prompt: Any) -> list[int]:
    """Token counts of each prompt of a completions request (a string, token ids, or lists of them)."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [len(tokenizer.encode(prompt))]
    prompt = list(prompt)
    if not prompt:
        return [0]
    if all(isinstance(t, int) for t in prompt):
        return [len(prompt)]
    return [n for item in prompt for n in count_completion_tokens(tokenizer, item)]
