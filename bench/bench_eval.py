"""Evaluation: `rayloom eval` (lm-evaluation-harness with its vLLM backend on Ray actors) vs `lm_eval` run
directly with `--model vllm` on the same tasks: the same scores, and throughput at 1 and 2 replicas on a
Ray cluster of two logical worker nodes (ray.cluster_utils.Cluster, one CPU each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Result

DESCRIPTION = ("eval: rayloom eval (lm-eval + vLLM on Ray actors, 1 and 2 replicas on two logical nodes) vs "
               "`lm_eval --model vllm` run directly on the same tasks; same scores, docs/s")

# simple_evaluate's default, which lm-eval's CLI uses; rayloom runs with the same so both do the same work.
LM_EVAL_CLI_BOOTSTRAP_ITERS = 100_000
TASKS = ["demo_arith", "python_qa", "demo_arith_mc", "python_mc", "heldout_text"]
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "ERROR",
              "HF_HUB_OFFLINE": "1"}


def _lm_eval_direct(model_dir: str, limit: int | None) -> tuple[float, dict]:
    from rayloom.eval import tasks_dir

    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "rayloom.eval.lm_eval_main", "--model", "vllm", "--model_args",
                f"pretrained={model_dir},dtype=float32,max_model_len=512,enforce_eager=True,seed=0",
                "--tasks", ",".join(TASKS), "--include_path", str(tasks_dir()), "--apply_chat_template",
                "--batch_size", "auto", "--output_path", out]
        if limit:
            args += ["--limit", str(limit)]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, env={**os.environ, **ENGINE_ENV},
                              cwd=out)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"lm_eval failed: {done.stderr[-2000:]}")
        return seconds, json.loads(next(Path(out).rglob("results_*.json")).read_text())


def _rayloom(model_path: str, root: str, limit: int | None, replicas: int) -> tuple[float, dict, int]:
    from rayloom.config import compose
    from rayloom.eval import evaluate

    overrides = ["model=tiny-2l", f"storage.root={root}", f"eval.model_path={model_path}",
                 f"eval.harness.tasks=[{','.join(TASKS)}]", "eval.max_model_len=512",
                 # lm-eval 0.4's CLI has no --bootstrap_iters: it bootstraps with simple_evaluate's default.
                 f"eval.harness.bootstrap_iters={LM_EVAL_CLI_BOOTSTRAP_ITERS}",
                 f"eval.num_replicas={replicas}", "eval.cpus_per_replica=1", "eval.plots=false"]
    if limit:
        overrides.append(f"eval.harness.limit={limit}")
    cfg = compose("eval", overrides)
    start = time.perf_counter()
    run = evaluate(cfg, record=False)
    seconds = time.perf_counter() - start
    results = json.loads((Path(run.uri) / "lm_eval" / "results.json").read_text())
    return seconds, results, sum(r.num_examples for r in run.results.values())


def _same_scores(a: dict, b: dict) -> tuple[int, int]:
    same = total = 0
    for task in TASKS:
        for key, value in b["results"][task].items():
            if "," in key and "_stderr" not in key and isinstance(value, int | float):
                total += 1
                same += abs(a["results"][task].get(key, float("nan")) - value) <= 1e-4 * max(1.0, abs(value))
    return same, total


def run(quick: bool = False) -> Result:
    import ray
    from ray.cluster_utils import Cluster

    from rayloom.config import compose
    from rayloom.models import resolve_model_dir

    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    limit = 10 if quick else None
    model_dir = str(resolve_model_dir(compose("eval", ["model=tiny-2l"]).model))
    direct_s, direct = _lm_eval_direct(model_dir, limit)
    # Two logical worker nodes of one CPU each (a head with no CPU for actors), as a 2-node cluster.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    try:
        with tempfile.TemporaryDirectory() as root:
            one_s, one, docs = _rayloom(model_dir, root, limit, 1)
            two_s, two, _ = _rayloom(model_dir, root, limit, 2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    same1, total = _same_scores(one, direct)
    same2, _ = _same_scores(two, direct)
    rows = [
        {"system": "lm_eval --model vllm (direct, one engine)", "docs": docs, "wall_s": direct_s,
         "docs_per_s": docs / direct_s},
        {"system": "rayloom eval, 1 replica (Ray actor)", "docs": docs, "wall_s": one_s, "docs_per_s": docs / one_s},
        {"system": "rayloom eval, 2 replicas (two logical nodes)", "docs": docs, "wall_s": two_s,
         "docs_per_s": docs / two_s},
    ]
    return Result(
        name="eval", description=DESCRIPTION, rows=rows,
        ratios={"rayloom 2 replicas / lm_eval direct (docs/s)": direct_s / two_s,
                "rayloom 1 replica / lm_eval direct (docs/s)": direct_s / one_s,
                "rayloom 2 / 1 replicas (docs/s)": one_s / two_s,
                "identical metrics, rayloom vs lm_eval direct (share)": min(same1, same2) / max(1, total)},
        goals={"rayloom 2 replicas / lm_eval direct (docs/s)": ">= 1.0 with a core (or GPU) per replica",
               "identical metrics, rayloom vs lm_eval direct (share)": "1.0"},
        notes=[f"tasks {', '.join(TASKS)} (conf/tasks, chat template on, greedy), {docs} documents; wall times include "
               "process/actor start and the vLLM engine load (tiny-2l, float32, CPU)",
               f"metrics compared: {total} per run; identical within 1e-4: 1 replica {same1}, 2 replicas {same2}",
               "on this 2-core machine the two replicas share the two cores (and each vLLM CPU engine runs its own "
               "OpenMP threads), so a second replica adds an engine load and halves the cores each gets; data "
               "parallelism pays once each replica has its own cores or GPU (a real multi-node cluster)"])
