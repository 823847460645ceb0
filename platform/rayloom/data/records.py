"""The three record schemas: validate a parsed row and normalise it to a canonical payload.

A valid record becomes a small dict (`{"text"}`, `{"messages"}` or `{"prompt", "chosen",
"rejected"}`) stored as canonical JSON, so every later stage sees one shape per schema. An invalid
one raises `BadRecord` with a reason from BAD_REASONS and a detail for the quarantine file.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

CHAT_ROLES = ("system", "user", "assistant")

# Reasons a row is quarantined (the job fails when they pass data.max_bad_fraction).
BAD_REASONS = ("not_utf8", "malformed_json", "schema", "empty", "nul_byte", "too_large", "file_too_large",
               "unreadable_file", "invalid")


class BadRecord(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        if reason not in BAD_REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r} (one of {', '.join(BAD_REASONS)})")
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalize_text(text: str, form: str) -> str:
    """Line endings -> \\n and the Unicode form; BadRecord for text no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate escape such as "\\ud800": valid JSON, but not text.
        raise BadRecord("not_utf8", f"not encodable as UTF-8: {exc.reason} at character {exc.start}") from None
    if "\x00" in text:
        raise BadRecord("nul_byte", f"holds a NUL character at {text.index(chr(0))}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if form == "none" else unicodedata.normalize(form, text)


def validate(obj: Any, schema: str, text_key: str, unicode_form: str) -> dict:
    """A canonical payload for `obj`, or BadRecord."""
    if not isinstance(obj, dict):
        raise BadRecord("schema", f"expected a JSON object, got {type(obj).__name__}")
    if schema == "text":
        return {"text": _text_field(obj, text_key, unicode_form)}
    if schema == "messages":
        return {"messages": _messages(obj.get("messages"), "messages", unicode_form, need_assistant=True)}
    return _preference(obj, unicode_form)


def validate_text(text: str, unicode_form: str) -> dict:
    """A plain-text unit (file, paragraph or line) as a `text` record."""
    text = normalize_text(text, unicode_form).strip()
    if not text:
        raise BadRecord("empty", "the text is empty")
    return {"text": text}


def _text_field(obj: dict, key: str, form: str) -> str:
    if key not in obj:
        raise BadRecord("schema", f"missing field {key!r} (text records need it; fields: {sorted(obj)[:8]})")
    value = obj[key]
    if not isinstance(value, str):
        raise BadRecord("schema", f"field {key!r} must be a string, got {type(value).__name__}")
    value = normalize_text(value, form).strip()
    if not value:
        raise BadRecord("empty", f"field {key!r} is empty")
    return value


def _messages(value: Any, field: str, form: str, *, need_assistant: bool) -> list[dict]:
    if value is None:
        raise BadRecord("schema", f"missing field {field!r}")
    if not isinstance(value, list):
        raise BadRecord("schema", f"field {field!r} must be a list of messages, got {type(value).__name__}")
    if not value:
        raise BadRecord("empty", f"field {field!r} is an empty list")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise BadRecord("schema", f"{field}[{i}] must be an object with string 'role' and 'content'")
        if message["role"] not in CHAT_ROLES:
            raise BadRecord("schema", f"{field}[{i}].role={message['role']!r} is not one of {', '.join(CHAT_ROLES)}")
        content = normalize_text(message["content"], form).strip()
        if not content:
            raise BadRecord("empty", f"{field}[{i}].content is empty")
        out.append({"role": message["role"], "content": content})
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise BadRecord("schema", f"field {field!r} has no assistant message to train on")
    return out


def _response(obj: dict, field: str, form: str) -> str:
    value = obj.get(field)
    # Conversational form (as TRL accepts): a list holding one assistant message.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        value = value[0].get("content")
    if value is None:
        raise BadRecord("schema", f"missing field {field!r} (preference records need prompt, chosen, rejected)")
    if not isinstance(value, str):
        raise BadRecord("schema", f"field {field!r} must be a string (or one assistant message)")
    value = normalize_text(value, form).strip()
    if not value:
        raise BadRecord("empty", f"field {field!r} is empty")
    return value


def _preference(obj: dict, form: str) -> dict:
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        prompt_text = normalize_text(prompt, form).strip()
        if not prompt_text:
            raise BadRecord("empty", "field 'prompt' is empty")
        messages = [{"role": "user", "content": prompt_text}]
    elif isinstance(prompt, list):
        messages = _messages(prompt, "prompt", form, need_assistant=False)
        if messages[-1]["role"] == "assistant":
            raise BadRecord("schema", "the prompt's last message must not be the assistant's")
    else:
        raise BadRecord("schema", "field 'prompt' must be a string or a list of messages")
    chosen, rejected = _response(obj, "chosen", form), _response(obj, "rejected", form)
    if chosen == rejected:
        raise BadRecord("schema", "chosen and rejected are identical")
    return {"prompt": messages, "chosen": chosen, "rejected": rejected}


def canonical_json(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def payload_text(payload: dict) -> str:
    """All the text of a record, for quality filters and deduplication."""
    if "text" in payload:
        return payload["text"]
    if "messages" in payload:
        return "\n".join(m["content"] for m in payload["messages"])
    return "\n".join([*(m["content"] for m in payload["prompt"]), payload["chosen"], payload["rejected"]])
