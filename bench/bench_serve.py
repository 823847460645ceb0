"""Serving: rayloom's Ray Serve endpoint vs `vllm serve` vs vLLM offline vs Hugging Face generate.

Same tiny model, same prompts (from the prompt template registry, rendered with the model's chat
template), same greedy decoding of a fixed number of tokens (EOS ignored), one system at a time on
this machine. The two HTTP servers are driven by the same streaming client on 127.0.0.1 with a
bounded number of requests at each concurrency level; time to first token (TTFT) is the wait for
the first content chunk, inter-token latency (ITL) is each request's (last - first token time) /
(tokens - 1), so servers that batch stream chunks are measured per token all the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from harness import Result

from rayloom.ports import free_port

DESCRIPTION = "serving: rayloom Ray Serve vs vllm serve vs vLLM offline vs HF generate (tokens/s, TTFT, ITL)"

API_KEY = "bench-serve-key"
KV_CACHE_GIB = "1"
ROUNDS = 3
RAYLOOM = "rayloom Ray Serve"
RAYLOOM_PYTHON_PROXY = "rayloom Ray Serve (Python proxy)"
VLLM_SERVE_PLACED = "vllm serve (same placement)"
VLLM_SERVE_STOCK = "vllm serve (stock placement)"


def _prompts(registry) -> list[list[dict]]:
    questions = ["3 + 4", "15 - 9", "27 + 31", "80 - 45", "6 + 6", "50 - 25", "44 + 12", "99 - 11"]
    prompts = [registry.render("demo_arith@3", question=q) for q in questions]
    prompts += [registry.render("qa", question=q) for q in (
        "What does the return statement do?", "What is a Python list?", "What does import do?",
        "How do you write a comment in Python?")]
    prompts += [registry.render("sentiment@3", text=t) for t in ("The deploy went smoothly.", "Nothing works today.")]
    prompts += [registry.render("summarize", passage=p) for p in (
        "The while statement repeats a block while a condition holds; break ends it early and continue skips "
        "to the next check.", "A class bundles data and functions; instances get their own attributes and "
        "share the class's methods.")]
    return prompts


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _one_request(http, url: str, headers: dict, body: dict) -> dict:
    start = time.perf_counter()
    token_times: list[float] = []
    completion_tokens = 0
    async with http.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} -> {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            # One chunk per generated token after the role chunk. A random tiny model's tokens can be
            # partial UTF-8, which the detokenizer holds back ("" content), so count chunks, not text.
            if chunk.get("choices") and "role" not in chunk["choices"][0]["delta"]:
                token_times.append(time.perf_counter())
    if not token_times:
        raise RuntimeError(f"{url}: no content streamed")
    ttft = token_times[0] - start
    itl = (token_times[-1] - token_times[0]) / max(1, completion_tokens - 1)
    return {"ttft": ttft, "itl": itl, "tokens": completion_tokens, "end": time.perf_counter()}


async def _load(url: str, headers: dict, model: str, prompts: list, concurrency: int, num_requests: int,
                max_tokens: int) -> dict:
    import httpx

    queue = list(range(num_requests))
    results: list[dict] = []

    async def worker(http) -> None:
        while queue:
            i = queue.pop()
            body = {"model": model, "messages": prompts[i % len(prompts)], "max_tokens": max_tokens,
                    "temperature": 0.0, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            results.append(await _one_request(http, url, headers, body))

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[worker(http) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {
        "output_tok_s": tokens / wall,
        "ttft_p50_ms": 1000 * _percentile([r["ttft"] for r in results], 50),
        "ttft_p99_ms": 1000 * _percentile([r["ttft"] for r in results], 99),
        "itl_p50_ms": 1000 * _percentile([r["itl"] for r in results], 50),
        "itl_p99_ms": 1000 * _percentile([r["itl"] for r in results], 99),
        "requests": len(results),
    }


def _serving_cpu_s(server_pid: int) -> dict[int, float]:
    """CPU seconds so far of each process of a server's tree, except the engine's (EngineCore, Worker)."""
    import psutil

    from rayloom.serve.cpu_placement import ENGINE_CORE_TITLE, WORKER_TITLE, process_title

    root = psutil.Process(server_pid)
    used = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            if not process_title(proc).startswith((ENGINE_CORE_TITLE, WORKER_TITLE)):
                times = proc.cpu_times()
                used[proc.pid] = times.user + times.system
        except psutil.Error:
            pass
    return used


def _measure_server(name: str, base_url: str, headers: dict, model: str, prompts: list, levels: list[int],
                    requests_per_level: int, max_tokens: int, server_pid: int) -> list[dict]:
    url = base_url + "/chat/completions"
    rows = []
    asyncio.run(_load(url, headers, model, prompts, 2, 4, max_tokens))  # warm-up
    for concurrency in levels:
        before = _serving_cpu_s(server_pid)
        # The median round (by throughput) of three, with the spread kept: with the engine's
        # scheduler process placed (rayloom.serve.cpu_placement) rounds agree within ~10%.
        rounds = [asyncio.run(_load(url, headers, model, prompts, concurrency,
                                    max(requests_per_level, 2 * concurrency), max_tokens)) for _ in range(ROUNDS)]
        after = _serving_cpu_s(server_pid)
        # Everything the server runs besides the engine (HTTP server, tokenizer/detokenizer, for
        # rayloom also Serve's proxy, controller and Ray's daemons), per output token (EOS ignored).
        frontend_cpu_s = sum(after[pid] - before[pid] for pid in after.keys() & before.keys())
        tokens = sum(r["requests"] for r in rounds) * max_tokens
        rounds.sort(key=lambda r: r["output_tok_s"])
        stats = rounds[len(rounds) // 2]
        spread = f"{rounds[0]['output_tok_s']:.0f}-{rounds[-1]['output_tok_s']:.0f}"
        rows.append({"system": name, "concurrency": concurrency, **stats, "tok_s_range": spread,
                     "frontend_cpu_ms_per_tok": 1000 * frontend_cpu_s / tokens})
    return rows


def _wait_http(url: str, headers: dict, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def _run_vllm_serve(work: Path, model_dir: Path, model_id: str, max_model_len: int, *, placed: bool,
                    **load) -> list[dict]:
    """`vllm serve`, with its EngineCore placed by rayloom's rule (placed=True) or where vLLM puts it."""
    import psutil

    from rayloom.serve.cpu_placement import place_engine_core

    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB}
    # The OpenAI server `vllm serve` runs (its CLI wrapper looks up the "vllm" distribution, which
    # vllm-cpu does not register under that name).
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", model_id, "--dtype", "float32",
           "--max-model-len", str(max_model_len), "--enforce-eager", "--disable-log-stats"]
    with open(work / "vllm-serve.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", {}, 600, proc)
        if placed and place_engine_core("auto", root=psutil.Process(proc.pid)) is None:
            print("note: rayloom's placement rule leaves vllm serve's EngineCore where it is on this machine")
        name = VLLM_SERVE_PLACED if placed else VLLM_SERVE_STOCK
        return _measure_server(name, f"http://127.0.0.1:{port}/v1", {}, model_id, server_pid=proc.pid, **load)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _run_rayloom(work: Path, preset: str, system: str = RAYLOOM, overrides: tuple[str, ...] = (), **load) -> list[dict]:
    """rayloom's endpoint exactly as `rayloom serve` builds it, in its own process (own embedded Ray)."""
    port = free_port()
    key_file = work / "api_keys"
    key_file.write_text(API_KEY + "\n")
    cmd = [sys.executable, "-m", "rayloom.cli", "serve", f"model={preset}", f"serve.port={port}",
           f"serve.api_key_file={key_file}", f"serve.config_out={work / 'serve_config.yaml'}",
           # In-flight bound above the highest concurrency level: the bench measures the serving
           # stack, not rayloom's admission bound (vllm serve has none).
           f"serve.kv_cache_gib={KV_CACHE_GIB}", "serve.max_ongoing_requests=128", "serve.max_queued_requests=256",
           *overrides]
    with open(work / f"rayloom-serve{'-'.join(('',) + overrides)}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", headers, 900, proc)
        model_id = _served_model(f"http://127.0.0.1:{port}/v1", headers)
        return _measure_server(system, f"http://127.0.0.1:{port}/v1", headers, model_id,
                               server_pid=proc.pid, **load)
    finally:
        proc.send_signal(signal.SIGINT)  # `rayloom serve` deletes the app and stops its Ray
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _served_model(base_url: str, headers: dict) -> str:
    import httpx

    return httpx.get(base_url + "/models", headers=headers, timeout=30).json()["data"][0]["id"]


def _run_vllm_offline(work: Path, model_dir: Path, token_prompts: list[list[int]], max_tokens: int, max_model_len: int) -> dict:
    # vLLM spawns its engine process: run it from a script with a __main__ guard.
    script = textwrap.dedent(f"""
        import json, os, time
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = {KV_CACHE_GIB!r}
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM(model={str(model_dir)!r}, dtype="float32", max_model_len={max_model_len}, enforce_eager=True)
            prompts = [{{"prompt_token_ids": ids}} for ids in {token_prompts!r}]
            params = SamplingParams(max_tokens={max_tokens}, temperature=0.0, ignore_eos=True)
            llm.generate(prompts[:2], params)  # warm-up
            start = time.perf_counter()
            outputs = llm.generate(prompts, params)
            wall = time.perf_counter() - start
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            print("RESULT " + json.dumps({{"tokens": tokens, "wall": wall}}))
    """)
    (work / "vllm_offline.py").write_text(script)
    out = subprocess.run([sys.executable, str(work / "vllm_offline.py")], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"vLLM offline failed: {out.stderr[-2000:]}")
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {"system": "vLLM offline LLM.generate", "concurrency": f"batch {len(token_prompts)}",
            "output_tok_s": result["tokens"] / result["wall"], "requests": len(token_prompts)}


def _run_hf(model_dir: Path, token_prompts: list[list[int]], max_tokens: int, batch_size: int) -> dict:
    import torch

    from rayloom.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    pad = tokenizer.pad_token_id

    def generate(batch: list[list[int]]) -> int:
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])  # left padding
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        return (out.shape[1] - width) * len(batch)

    generate(token_prompts[:1])  # warm-up
    start = time.perf_counter()
    tokens = sum(generate(token_prompts[i:i + batch_size]) for i in range(0, len(token_prompts), batch_size))
    wall = time.perf_counter() - start
    return {"system": "HF generate", "concurrency": f"batch {batch_size}", "output_tok_s": tokens / wall,
            "requests": len(token_prompts)}


def run(quick: bool = False) -> Result:
    from rayloom.config import compose
    from rayloom.models import load_tokenizer, resolve_model_dir
    from rayloom.prompts import load_registry

    preset = "tiny-2l" if quick else "tiny"
    cfg = compose("serve", [f"model={preset}"])
    model_dir = resolve_model_dir(cfg.model)
    max_model_len = min(cfg.serve.max_model_len, cfg.model.max_position_embeddings)
    tokenizer = load_tokenizer(model_dir)
    prompts = _prompts(load_registry())
    token_prompts = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        token_prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    max_tokens = 32 if quick else 64
    # 32 and 64: the "concurrency >= 16" for the vLLM vs HF goal, where batching pays.
    levels = [1, 4] if quick else [1, 4, 16, 32, 64]
    load = {"prompts": prompts, "levels": levels, "requests_per_level": 8 if quick else 32, "max_tokens": max_tokens}

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    rows: list[dict] = []
    rows += _run_rayloom(work, preset, **load)
    # The same endpoint behind Serve's Python HTTP proxy instead of HAProxy (the default before).
    rows += _run_rayloom(work, preset, RAYLOOM_PYTHON_PROXY, ("serve.http_ingress=proxy",), **load)
    rows += _run_vllm_serve(work, model_dir, "bench", max_model_len, placed=True, **load)
    rows += _run_vllm_serve(work, model_dir, "bench", max_model_len, placed=False, **load)
    rows.append(_run_vllm_offline(work, model_dir, token_prompts, max_tokens, max_model_len))
    hf_prompts = token_prompts if quick else token_prompts * 4
    rows.append(_run_hf(model_dir, hf_prompts[:4], max_tokens, 1))
    rows.append(_run_hf(model_dir, hf_prompts[:32], max_tokens, 16))
    if not quick:
        rows.append(_run_hf(model_dir, hf_prompts, max_tokens, 64))

    def row(system: str, concurrency) -> dict:
        return next(r for r in rows if r["system"] == system and r["concurrency"] == concurrency)

    ratios, goals = {}, {}
    for baseline, goal in ((VLLM_SERVE_PLACED, True), (VLLM_SERVE_STOCK, False)):
        for c in levels:
            ours, theirs = row(RAYLOOM, c), row(baseline, c)
            key = f"rayloom / {baseline}, output tokens/s @ concurrency {c}"
            ratios[key] = ours["output_tok_s"] / theirs["output_tok_s"]
            goals[key] = ">= 0.9" if goal else ""
            key = f"rayloom - {baseline}, TTFT p50 ms @ concurrency {c}"
            ratios[key] = ours["ttft_p50_ms"] - theirs["ttft_p50_ms"]
            goals[key] = "<= 10" if goal else ""
    for c in levels:
        ours, theirs = row(RAYLOOM_PYTHON_PROXY, c), row(VLLM_SERVE_PLACED, c)
        ratios[f"{RAYLOOM_PYTHON_PROXY} / {VLLM_SERVE_PLACED}, output tokens/s @ concurrency {c}"] = (
            ours["output_tok_s"] / theirs["output_tok_s"])
        ratios[f"{RAYLOOM_PYTHON_PROXY} - {VLLM_SERVE_PLACED}, TTFT p50 ms @ concurrency {c}"] = (
            ours["ttft_p50_ms"] - theirs["ttft_p50_ms"])
    top = levels[-1]
    key = f"rayloom / {VLLM_SERVE_PLACED}, serving CPU per token outside the engine @ concurrency {top}"
    ratios[key] = row(RAYLOOM, top)["frontend_cpu_ms_per_tok"] / row(VLLM_SERVE_PLACED, top)["frontend_cpu_ms_per_tok"]
    # vLLM vs HF generate: HF as a server would run it (one request at a time, batch 1; the goal's
    # reading) and HF with a static batch as large as the concurrency (no continuous batching).
    hf_batched, hf_single = row("HF generate", "batch 16"), row("HF generate", "batch 1")
    for c in (c for c in levels if c >= 16):
        for system in (VLLM_SERVE_PLACED, RAYLOOM):
            key = f"{system} @ concurrency {c} / HF generate batch 1 (tokens/s)"
            ratios[key], goals[key] = row(system, c)["output_tok_s"] / hf_single["output_tok_s"], ">= 5"
        key = f"{VLLM_SERVE_PLACED} @ concurrency {c} / HF generate batch {c} (tokens/s)"
        if any(r["system"] == "HF generate" and r["concurrency"] == f"batch {c}" for r in rows):
            ratios[key] = row(VLLM_SERVE_PLACED, c)["output_tok_s"] / row("HF generate", f"batch {c}")["output_tok_s"]
    key = "vLLM offline / HF generate batch 16 (tokens/s)"
    ratios[key] = row("vLLM offline LLM.generate", f"batch {len(token_prompts)}")["output_tok_s"] / hf_batched["output_tok_s"]
    notes = [
        f"model {preset} ({model_dir.name}), float32 on CPU (vllm-cpu), {len(prompts)} chat prompts from "
        f"conf/prompts, greedy, {max_tokens} output tokens per request (EOS ignored), KV cache {KV_CACHE_GIB} GiB, "
        "eager mode, one system at a time.",
        "rayloom runs as `rayloom serve` with its defaults (embedded Ray: Serve's HAProxy ingress -> a replica "
        "serving HTTP itself, running the OpenAI ingress with auth/limits and Ray Serve LLM's LLMServer -> vLLM "
        "engine; Serve throughput-optimized replicas), and again with serve.http_ingress=proxy (Serve's Python HTTP "
        "proxy in front of the same replica, the default before); vllm serve is vLLM's own OpenAI server on the "
        "same engine settings.",
        "Placement: vllm-cpu binds the worker's OpenMP thread to core 0 and leaves core 1 to its scheduler process "
        "(EngineCore), which busy-polls the worker, and to the HTTP frontend. On 2 cores that starves the frontend "
        "(streams arrive in one burst at the end, rounds swing 2-3x). rayloom's default "
        "(serve.engine_core_placement=auto) moves the EngineCore onto the worker's core; 'vllm serve (same "
        "placement)' gets the same move from this script (rayloom.serve.cpu_placement) and is the baseline the "
        "goals are judged against; 'vllm serve (stock placement)' is vLLM as it comes.",
        f"Load: {load['requests_per_level']}+ streaming requests per level (at least 2x concurrency), bounded, "
        f"127.0.0.1 only; the median of {ROUNDS} rounds per level (tok_s_range: slowest-fastest round). "
        "frontend_cpu_ms_per_tok: CPU time of every process of the server except the engine's (EngineCore, "
        "Worker) over all rounds of the level, per output token. HF generate runs in this process (batch 1, "
        "16 and 64, left padding, static batches).",
        "The model is tiny (a few M parameters): per-token compute is far below per-request overheads, so this "
        "measures serving overheads more than engines; vLLM's batching advantage over HF needs real model sizes. "
        "HF generate runs with torch's default threads (both cores); vLLM's engine uses one.",
        "On a 2-core machine the frontend has one core: rayloom's frontend (HAProxy or Serve's HTTP proxy, the "
        "replica's ingress and vLLM frontend, Serve's controller, Ray's daemons) spends more CPU per token than vllm "
        "serve's single API server (frontend_cpu_ms_per_tok), which caps its throughput once that core is full.",
    ]
    return Result(name="serve", description=DESCRIPTION, rows=rows, ratios=ratios, goals=goals, notes=notes)
