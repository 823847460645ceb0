"""Serving: Ray Serve hosting vLLM replicas behind an authenticated, OpenAI-compatible endpoint.

- `rayloom.serve.app.build_app(cfg)`: the Serve application (Ray Serve LLM + rayloom's ingress;
  by default one deployment whose replicas are ingress and engine, `rayloom.serve.endpoint`)
- `rayloom.serve.deploy`: `deploy(cfg)` and the `rayloom serve` job, `run_serve_job(cfg)`
- `rayloom.serve.serve_config.render_serve_config(cfg)`: the same app as a Serve config file
- `rayloom.serve.chat.chat_main(argv)`: `rayloom chat`
- `rayloom.serve.templates`: the prompt template registry (conf/prompts), shared with evaluation
- `rayloom.serve.demo_stage.stage_serve`: the demo's serve stage

Importing this package imports neither Ray nor vLLM.
"""

from rayloom.serve.templates import PromptRegistry, PromptTemplate, load_registry, render, to_prompt

__all__ = ["PromptRegistry", "PromptTemplate", "load_registry", "render", "to_prompt"]
