"""Serving: Ray Serve hosting vLLM replicas behind an authenticated, OpenAI-compatible endpoint.

- `deploy(cfg) -> Endpoint`: put the app on the connected Ray cluster and wait until it runs
- `run_serve_job(cfg)`: the `rayloom serve` job (gate, Serve config file, deploy, health check, block)
- `openai_client(base_url, api_key)`: the official openai client for any rayloom / OpenAI endpoint
- `chat_main(argv)`: `rayloom chat`

The app itself is `rayloom.serve.app:build_app(cfg)` (and `app_builder`, the import path a Serve
config file or KubeRay RayService names); its Serve config file comes from
`rayloom.serve.serve_config.render_serve_config(cfg)`. Prompt templates live in `rayloom.prompts`.

Importing this package imports neither Ray nor vLLM.
"""

from rayloom.openai_client import openai_client
from rayloom.serve.chat import chat_main
from rayloom.serve.deploy import Endpoint, deploy, run_serve_job

__all__ = ["Endpoint", "chat_main", "deploy", "openai_client", "run_serve_job"]
