"""Demo stage `serve`: host the model the demo produced and send it one chat request.

Runs inside `rayloom run`'s Ray session, so the endpoint lives as long as the demo does; the
printed `rayloom serve serve.model_path=...` command keeps one up afterwards.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

from rayloom.config import RayloomConfig
from rayloom.serve.auth import AuthSettings, key_digest, read_api_keys


def stage_serve(cfg: RayloomConfig, state) -> None:
    from rayloom.serve.client import openai_client
    from rayloom.serve.deploy import deploy
    from rayloom.serve.templates import render

    model_dir = state.final_model_dir or state.model_dir
    if model_dir is None:
        raise RuntimeError("the serve stage needs a model: run the model stage first")
    serve = dataclasses.replace(cfg.serve, model_path=str(model_dir), model_id=cfg.serve.model_id or cfg.model.name)
    cfg = dataclasses.replace(cfg, serve=serve)
    keys = read_api_keys(serve.api_key_env, serve.api_key_file)
    # Without a configured key the demo still serves with auth on: a one-time key that only
    # this process knows (the replicas get its digest), never printed.
    key = keys[0] if keys else secrets.token_urlsafe(24)
    auth = AuthSettings(require_api_key=True, api_key_env=serve.api_key_env, api_key_file=serve.api_key_file,
                        key_digests=(key_digest(key),) + tuple(key_digest(k) for k in keys[1:]))
    endpoint = deploy(cfg, auth=auth)
    # A held-out demo task (never in the SFT or preference data), so the reply shows what was learned.
    from rayloom.data.demo_corpus import demo_eval_examples, is_correct

    example = next(e for e in demo_eval_examples(cfg.data.num_demo_eval, cfg.data.seed) if e["task"] == "next")
    question = example["prompt"]
    client = openai_client(endpoint.base_url, key)
    start = time.perf_counter()
    response = client.chat.completions.create(
        model=endpoint.model_id, messages=render("assistant", message=question), max_tokens=32, temperature=0.0)
    latency = time.perf_counter() - start
    reply = response.choices[0].message.content or ""
    print(f"  endpoint: {endpoint.base_url}  (model {endpoint.model_id}, Ray Serve + vLLM, API key "
          f"{'$' + serve.api_key_env if keys else 'generated for this run'})")
    verdict = "correct" if is_correct(example["answer"], reply) else f"expected {example['answer']!r}"
    print(f"  chat: {question!r} -> {reply!r} ({verdict}; {response.usage.completion_tokens} tokens, "
          f"{latency:.2f}s)")
    from rayloom.lineage import describe, read_lineage

    print("  lineage: " + "\n        <- ".join(describe(read_lineage(model_dir))))
    print(f"  keep it up after the demo: rayloom serve serve.model_path={model_dir}")
    state.endpoint_url = endpoint.base_url
    state.summary["serve"] = {"endpoint_url": endpoint.base_url, "model_id": endpoint.model_id, "reply": reply,
                              "completion_tokens": response.usage.completion_tokens}
