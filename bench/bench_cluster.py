"""Cluster: `rayloom submit` vs Ray's own `ray job submit` for the same job on the same local head,
and a GPU task's wait on a fake-GPU cluster when the autoscaler must add a node (cold) vs when the
node is already up (warm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Result

DESCRIPTION = "cluster: rayloom submit vs ray job submit (same job, same head); GPU task cold (scale-up) vs warm"
ROOT = Path(__file__).resolve().parents[1]
JOB = ["run.stages=[model]", "model=tiny-2l"]


def _timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {out.stdout[-2000:]}")
    return elapsed


def _submission(repeats: int) -> tuple[list[dict], dict]:
    from rayloom.cluster import cluster_main
    from rayloom.cluster import head as head_mod
    from rayloom.cluster.job_spec import build_entrypoint
    from rayloom.config import ClusterConfig

    state_dir = Path(tempfile.mkdtemp(prefix="rayloom-bench-head-"))
    token = state_dir / "auth_token"
    dashboard_port = head_mod.free_port()
    cluster_main(["up", "--state-dir", str(state_dir), "--port", str(head_mod.free_port()), "--dashboard-port",
                  str(dashboard_port), "--num-cpus", "4", f"cluster.auth_token_path={token}"])
    url = f"http://127.0.0.1:{dashboard_port}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    rayloom = [sys.executable, "-m", "rayloom.cli", "submit", "run", *JOB, "--address", url,
               f"cluster.auth_token_path={token}"]
    # Ray's CLI, shipping the same code the same way (working_dir + the package as a py_module)
    # and running the same entrypoint.
    ray_cli = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", url, "--working-dir", ".",
               "--runtime-env-json", json.dumps({"py_modules": ["platform/rayloom"],
                                                 "excludes": [".venv", ".venv-tools", "runs", "outputs"],
                                                 "env_vars": {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}}),
               "--", "sh", "-c", build_entrypoint("run", JOB, ClusterConfig())]
    try:
        _timed(rayloom, env)  # warm-up: builds the tiny model into the cache once
        times = {"rayloom submit": [], "ray job submit": []}
        for _ in range(repeats):
            times["rayloom submit"].append(_timed(rayloom, env))
            times["ray job submit"].append(_timed(ray_cli, env))
    finally:
        cluster_main(["down", "--state-dir", str(state_dir)])
    rows = [{"system": name, "submit_to_exit_s": sorted(values)[len(values) // 2], "runs": len(values)}
            for name, values in times.items()]
    ratio = rows[0]["submit_to_exit_s"] / rows[1]["submit_to_exit_s"]
    return rows, {"rayloom submit / ray job submit (time to job exit)": ratio}


def _autoscaling() -> tuple[list[dict], dict]:
    from rayloom.cluster import cluster_main
    from rayloom.cluster import head as head_mod

    state_dir = Path(tempfile.mkdtemp(prefix="rayloom-bench-fake-"))
    cluster_main(["up", "--local-fake", "--state-dir", str(state_dir), "--port", str(head_mod.free_port()),
                  "--dashboard-port", str(head_mod.free_port()), "--idle-timeout-minutes", "0.1",
                  f"cluster.auth_token_path={state_dir / 'auth_token'}"])
    probe = [sys.executable, "-m", "rayloom.cli", "cluster", "probe", "--state-dir", str(state_dir), "--gpus", "1",
             "--accelerator-type", "A10G", "--json"]
    try:
        results = []
        for _ in range(2):  # first: the autoscaler adds a node; second: the node is still up
            out = subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, timeout=300)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        cluster_main(["down", "--state-dir", str(state_dir)])
    cold, warm = results
    rows = [{"system": "GPU task, node added by the autoscaler (cold)", "wait_for_gpu_s": cold["scheduled_after_s"],
             "new_node": cold["new_node"]},
            {"system": "GPU task, node already up (warm)", "wait_for_gpu_s": warm["scheduled_after_s"],
             "new_node": warm["new_node"]}]
    return rows, {"cold / warm (wait for a fake A10G)": cold["scheduled_after_s"] / max(warm["scheduled_after_s"], 0.05)}


def run(quick: bool = False) -> Result:
    rows, ratios = _submission(repeats=1 if quick else 3)
    scale_rows, scale_ratios = _autoscaling()
    return Result(
        name="cluster", description=DESCRIPTION, rows=rows + scale_rows, ratios={**ratios, **scale_ratios},
        goals={"rayloom submit / ray job submit (time to job exit)": "<= 1.2"},
        notes=["Same local `ray start --head` (token auth), same job (`run run.stages=[model] model=tiny-2l`, "
               "model cached), each command a fresh process; medians.",
               "rayloom submit also composes and validates the config locally before uploading.",
               "Fake GPU nodes are local raylets; the cold wait is the autoscaler's reaction plus a node start."])
