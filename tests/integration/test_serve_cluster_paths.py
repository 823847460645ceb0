"""Slow serving paths: the cluster way of loading from S3 (replicas fetch the model and adapters
themselves) and scale to zero. Real Ray Serve + vLLM, a real S3 server (moto) on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers.serve_fixtures import make_lora_adapter

from rayloom.ports import free_port
from rayloom.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replicas_load_model_and_adapter_from_s3(s3_server, tiny_model_dir, tmp_path):
    from rayloom import storage

    bucket = s3_server["bucket"]
    model_uri = f"s3://{bucket}/serve/models/tiny-2l"
    adapter_uri = f"s3://{bucket}/serve/adapters/demo"
    storage.commit_dir(tiny_model_dir, model_uri)
    storage.commit_dir(make_lora_adapter(tiny_model_dir, tmp_path / "adapter"), adapter_uri)
    (tmp_path / "keys").write_text("s3-test-key\n")
    # A subprocess starts its own Ray, so its workers inherit the S3 credentials set by s3_server;
    # resolve_locally=False is what a remote cluster does: nothing is downloaded by the driver.
    script = tmp_path / "serve_s3.py"
    script.write_text(textwrap.dedent(f"""
        import json
        if __name__ == "__main__":
            from rayloom.config import compose
            from rayloom.runtime import ray_session
            from rayloom.serve import openai_client
            from rayloom.serve import deploy
            from rayloom.serve.deployment_plan import plan_serving
            cfg = compose("serve", ["model=tiny-2l", "serve.model_path={model_uri}", "serve.model_id=tiny-s3",
                                    "serve.port={free_port()}",
                                    "serve.lora_adapters=[{{name:demo,path:{adapter_uri}}}]",
                                    "serve.api_key_file={tmp_path / 'keys'}"])
            plan = plan_serving(cfg, resolve_locally=False)
            assert plan.model_source == "{model_uri}" and plan.adapters == {{"demo": "{adapter_uri}"}}, plan
            with ray_session(cfg.cluster, cfg.storage):
                endpoint = deploy(cfg, plan=plan)
                client = openai_client(endpoint.base_url, "s3-test-key", max_retries=0)
                msgs = [{{"role": "user", "content": "What is 2 + 3?"}}]
                out = {{m: client.chat.completions.create(model=m, messages=msgs, max_tokens=8, temperature=0.0,
                                                         extra_body={{"ignore_eos": True}}).choices[0].message.content
                        for m in ("tiny-s3", "tiny-s3:demo")}}
                print("RESULT", json.dumps(out))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["tiny-s3"] and result["tiny-s3:demo"] != result["tiny-s3"]


def test_scale_to_zero_and_back_on_demand(tiny_model_dir, tmp_path):
    import ray
    from ray import serve

    from rayloom.config import compose
    from rayloom.runtime import init_ray
    from rayloom.serve import deploy, openai_client

    (tmp_path / "keys").write_text("zero-key\n")
    cfg = compose("serve", ["model=tiny-2l", f"serve.port={free_port()}", "serve.app_name=zero",
                            "serve.min_replicas=0", "serve.max_replicas=1", "serve.downscale_delay_s=2",
                            "serve.upscale_delay_s=0",
                            f"serve.api_key_file={tmp_path / 'keys'}"])
    started = init_ray(cfg.cluster, cfg.storage)
    try:
        endpoint = deploy(cfg)

        def running() -> int:
            deployments = serve.status().applications["zero"].deployments
            return next(d for n, d in deployments.items() if n.startswith("LLMServer")).replica_states.get("RUNNING", 0)

        wait_until(lambda: running() == 0, 300, interval_s=2, message="the idle replica to scale down to zero")
        client = openai_client(endpoint.base_url, "zero-key", timeout=600, max_retries=0)
        reply = client.completions.create(model=endpoint.model_id, prompt="hi", max_tokens=3)
        assert reply.usage.completion_tokens >= 1 and running() == 1
    finally:
        try:
            serve.delete("zero")
        finally:
            if started:
                ray.shutdown()
