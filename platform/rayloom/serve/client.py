"""Talk to a rayloom (or any OpenAI-compatible) endpoint: the official `openai` client + /health."""

from __future__ import annotations

from typing import Any

from rayloom.config import ServeConfig
from rayloom.errors import UserError


def endpoint_url(serve: ServeConfig) -> str:
    """The OpenAI base URL (".../v1") of an endpoint deployed with `serve`, as a local client sees it."""
    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::", "") else serve.host
    return f"http://{host}:{serve.port}{serve.route_prefix.rstrip('/')}/v1"


def api_base(url: str) -> str:
    """Normalise "http://host:port[/prefix][/v1]" to the OpenAI base URL ending in /v1."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"endpoint URL {url!r} must start with http:// or https://")
    return url if url.endswith("/v1") else url + "/v1"


def openai_client(base_url: str, api_key: str | None, *, timeout: float = 120.0, max_retries: int = 2):
    from openai import OpenAI

    # The openai client insists on a key; an endpoint without auth ignores this placeholder.
    return OpenAI(base_url=api_base(base_url), api_key=api_key or "no-key", timeout=timeout, max_retries=max_retries)


def check_health(base_url: str, api_key: str | None, *, timeout: float = 120.0) -> dict[str, Any]:
    """GET <root>/health: a real one-token generation. Raises RuntimeError unless it is healthy."""
    import httpx

    url = api_base(base_url).removesuffix("/v1") + "/health"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(url, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"endpoint health check {url} returned {response.status_code}: {response.text[:300]}")
    return response.json()
