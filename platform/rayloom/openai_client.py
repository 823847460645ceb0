"""Talking to any OpenAI-compatible endpoint (a rayloom endpoint, `vllm serve`, another server).

One base-URL normaliser, one client factory (the official `openai` client) and one reader of the
error message in an OpenAI error body, shared by serving (`rayloom chat`, `rayloom serve`'s health
check) and evaluation (endpoint targets, the LLM judge, lm-eval); neither package imports the
other for them.
"""

from __future__ import annotations

from rayloom.errors import UserError

# The openai client insists on a key; an endpoint without auth ignores this placeholder.
NO_KEY = "EMPTY"


def api_base(url: str) -> str:
    """Normalise "http://host:port[/prefix][/v1]" to the OpenAI base URL ending in /v1."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"endpoint URL {url!r} must start with http:// or https://")
    return url if url.endswith("/v1") else url + "/v1"


def openai_client(base_url: str, api_key: str | None, *, timeout: float = 120.0, max_retries: int = 2):
    """An `openai.OpenAI` client for the endpoint at `base_url` (with or without the /v1 suffix)."""
    # Imported here: openai (pydantic models, httpx) is a heavy import and `import rayloom` stays cheap.
    from openai import OpenAI

    return OpenAI(base_url=api_base(base_url), api_key=api_key or NO_KEY, timeout=timeout, max_retries=max_retries)


def error_message(exc: BaseException) -> str:
    """The server's message from an `openai.APIStatusError` ({"error": {"message": ...}}), else str(exc)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)
