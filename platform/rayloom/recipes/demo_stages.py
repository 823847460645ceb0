"""The demo's model, data, eval and serve stages (the training stages are in demo_training)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from datetime import UTC, datetime

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.recipes.state import DemoState


def stage_model(cfg: RayloomConfig, state: DemoState) -> None:
    """Build (or find in the cache) the base model and show what it is."""
    from rayloom.models import load_model, load_tokenizer, resolve_model_dir

    state.model_dir = resolve_model_dir(cfg.model)
    tokenizer = load_tokenizer(state.model_dir)
    model = load_model(state.model_dir, cfg.model.dtype)
    num_params = sum(p.numel() for p in model.parameters())
    sample = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                           tokenize=False, add_generation_prompt=True)
    print(f"  model: {cfg.model.name} at {state.model_dir}")
    print(f"  {num_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, chat prompt {sample!r}")
    state.final_model_dir = str(state.model_dir)
    state.summary["num_params"] = num_params


def stage_data(part_configs: dict[str, RayloomConfig], state: DemoState) -> None:
    """One dataset per demo-corpus part (pretrain, sft, preference), each from its own config.
    With data.output set, a part goes to <data.output>/<part> (the parts must not share a folder)."""
    from rayloom.data import run_data_job
    from rayloom.data.demo_corpus import demo_eval_uri

    outputs = {}
    for part, cfg in part_configs.items():
        if cfg.data.output:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, output=storage.join(cfg.data.output, part)))
        result = run_data_job(cfg)
        manifest = result.manifest
        outputs[part] = {"output": result.output, "train_rows": manifest.splits["train"].rows,
                         "validation_rows": manifest.splits["validation"].rows,
                         "tokens": manifest.tokens.real if manifest.tokens else None,
                         "content_hash": manifest.content_hash}
    state.pretrain_data = outputs["pretrain"]["output"]
    state.sft_data = outputs["sft"]["output"]
    state.preference_data = outputs["preference"]["output"]
    state.summary["data"] = outputs
    # Held-out prompts + answers of the generated tasks, for evaluation (also demo_eval_examples()).
    held_out = demo_eval_uri(part_configs["pretrain"])
    state.summary["demo_eval"] = held_out
    print(f"  held-out demo tasks for evaluation: {held_out}")


def stage_eval(cfg: RayloomConfig, state: DemoState) -> None:
    """The base model and the newest one on eval.tasks (by default the demo corpus's held-out
    checkable tasks), before -> after; the side-by-side report lands under <storage.root>/eval/compare/."""
    from rayloom.eval import (
        eval_root,
        evaluate,
        format_table,
        headline_metrics,
        model_key,
        write_comparison,
    )

    _print_goals(state)
    base, tuned = state.model_dir, state.final_model_dir
    if not tuned or model_key(str(base)) == model_key(str(tuned)):
        print("  skipped: no fine-tuned model yet (no training stage ran), so there is nothing to compare "
              "against the base model")
        return
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    runs = storage.join(eval_root(cfg.storage), "runs")
    before = evaluate(cfg, model_path=str(base), run_name=f"demo-{stamp}-base", label="base",
                      output=storage.join(runs, f"demo-{stamp}-base"))
    after = evaluate(cfg, model_path=str(tuned), run_name=f"demo-{stamp}-tuned", label="fine-tuned",
                     output=storage.join(runs, f"demo-{stamp}-tuned"))
    out = storage.join(eval_root(cfg.storage), "compare", f"demo-{stamp}")
    written = write_comparison(before.payload, after.payload, out, labels=("base", "fine-tuned"))
    # The headline rows: each task's primary metric; every metric is in the report.
    headline = headline_metrics(after.payload)
    rows = [r for r in written["rows"] if r["metric"] in headline]
    print("  " + format_table(rows, ("base", "fine-tuned")).replace("\n", "\n  "))
    improved = [r["metric"] for r in rows if r["verdict"] == "better"]
    not_improved = [r["metric"] for r in rows if r["verdict"] != "better"]
    if not_improved:
        print(f"  not improved: {', '.join(not_improved)}")
    print(f"  reports: {before.uri}, {after.uri}; side by side: {written['uri']}/compare.html")
    if after.gate is not None:
        print(f"  {after.gate.message}")
    state.summary["eval"] = {"base_run": before.uri, "tuned_run": after.uri, "compare": written["uri"],
                             "improved": improved, "not_improved": not_improved,
                             "rows": {r["metric"]: {"base": r["before"], "fine-tuned": r["after"]} for r in rows}}


def _print_goals(state: DemoState) -> None:
    """Each training stage's model on the held-out data side by side, then each stage's goal: met or
    NOT met, with the numbers (a stage that did not run: not measured)."""
    board = state.scores
    if board.scores:
        print("  held-out data, stage by stage (greedy answers and perplexity on the driver):")
        print("  " + board.table().replace("\n", "\n  "))
    results = board.check_goals()
    print("  goals:")
    for result in results:
        print(result.line())
    state.summary["goals"] = [{"goal": r.goal.text, "before": r.before, "after": r.after, "met": r.met}
                              for r in results]
    state.summary["scores"] = {stage: score.as_dict() for stage, score in board.scores.items()}


def stage_serve(cfg: RayloomConfig, state: DemoState) -> None:
    """Host the newest model inside the demo's Ray session and send it one chat request: a held-out
    demo task (never in the SFT or preference data), so the reply shows what was learned."""
    from rayloom.data.demo_corpus import demo_eval_examples, is_correct
    from rayloom.lineage import describe, read_lineage
    from rayloom.serve import deploy, openai_client
    from rayloom.serve.auth import AuthSettings, key_digest, read_api_keys

    model_dir = state.final_model_dir or str(state.model_dir)
    serve = dataclasses.replace(cfg.serve, model_path=model_dir, model_id=cfg.serve.model_id or cfg.model.name)
    cfg = dataclasses.replace(cfg, serve=serve)
    keys = read_api_keys(serve.api_key_env, serve.api_key_file)
    # Without a configured key the demo still serves with auth on: a one-time key that only this
    # process knows (the replicas get its digest), never printed.
    key = keys[0] if keys else secrets.token_urlsafe(24)
    auth = AuthSettings(require_api_key=True, api_key_env=serve.api_key_env, api_key_file=serve.api_key_file,
                        key_digests=(key_digest(key),) + tuple(key_digest(k) for k in keys[1:]))
    endpoint = deploy(cfg, auth=auth)
    example = next(e for e in demo_eval_examples(cfg.data.num_demo_eval, cfg.data.seed) if e["task"] == "next")
    question = example["prompt"]
    client = openai_client(endpoint.base_url, key)
    start = time.perf_counter()
    # Asked as the scoreboard and the SFT data ask it: one user turn. The "assistant" template adds
    # a system turn, which the demo's chat data never has; the tiny model then answers a prompt
    # unlike any it was trained or scored on.
    response = client.chat.completions.create(
        model=endpoint.model_id, messages=[{"role": "user", "content": question}], max_tokens=32, temperature=0.0)
    latency = time.perf_counter() - start
    reply = response.choices[0].message.content or ""
    print(f"  endpoint: {endpoint.base_url}  (model {endpoint.model_id}, Ray Serve + vLLM, API key "
          f"{'$' + serve.api_key_env if keys else 'generated for this run'})")
    verdict = "correct" if is_correct(example["answer"], reply) else f"expected {example['answer']!r}"
    print(f"  chat: {question!r} -> {reply!r} ({verdict}; {response.usage.completion_tokens} tokens, "
          f"{latency:.2f}s)")
    print("  lineage: " + "\n        <- ".join(describe(read_lineage(model_dir))))
    print(f"  keep it up after the demo: rayloom serve serve.model_path={model_dir}")
    state.endpoint_url = endpoint.base_url
    state.summary["serve"] = {"endpoint_url": endpoint.base_url, "model_id": endpoint.model_id, "reply": reply,
                              "completion_tokens": response.usage.completion_tokens}
