"""An OpenAI-compatible endpoint (a rayloom endpoint, vLLM, or another) through the official openai client:
the served model's id, with the API key from the environment (for the eval target and the LLM judge).
"""

from __future__ import annotations

import os

from rayloom.errors import UserError
from rayloom.openai_client import openai_client


def endpoint_client(url: str, api_key_env: str, timeout_s: float):
    """The openai client for `url`, with the key from the environment variable `api_key_env`."""
    return openai_client(url, os.environ.get(api_key_env), timeout=timeout_s)


def served_model(client, wanted: str, url: str) -> str:
    import openai  # here: openai is heavy; only endpoint evaluations need it

    try:
        models = [m.id for m in client.models.list().data]
    except openai.AuthenticationError:
        raise UserError(f"the endpoint {url} refused the API key (set it in the environment variable named "
                        "by eval.api_key_env / eval.judge.api_key_env)") from None
    except openai.APIConnectionError as exc:
        raise UserError(f"cannot reach the endpoint {url}: {exc}") from None
    if wanted:
        if wanted not in models:
            raise UserError(f"the endpoint {url} does not serve model {wanted!r}; it serves {models}")
        return wanted
    if not models:
        raise UserError(f"the endpoint {url} serves no model")
    return models[0]
