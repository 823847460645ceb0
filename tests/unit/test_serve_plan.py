"""Planning a deployment: model source, context window, adapters (local and from a real S3 server),
and the engine / deployment settings handed to Ray Serve LLM."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers.serve_fixtures import make_lora_adapter

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.serve.adapters import fetch_adapter
from rayloom.serve.app import build_deployment_config, build_engine_kwargs
from rayloom.serve.deployment_plan import plan_serving


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "demo")


def test_plan_resolves_the_preset_and_caps_the_window(tiny_model_dir, caplog):
    cfg = compose("serve", ["model=tiny-2l"])
    with caplog.at_level(logging.WARNING):
        plan = plan_serving(cfg, resolve_locally=True)
    assert plan.model_source == str(tiny_model_dir) == plan.tokenizer_source
    assert plan.model_id == "tiny-2l"
    # tiny-2l has 512 positions: the 1024 window is capped, the prompt limit follows.
    assert plan.max_model_len == 512 and plan.limits.max_model_len == 512
    assert plan.limits.max_prompt_tokens == 511
    assert "exceeds the model's 512 positions" in caplog.text


def test_model_path_and_model_id_override_the_model_group(tiny_model_dir):
    cfg = compose("serve", ["model=tiny-2l", f"serve.model_path={tiny_model_dir}", "serve.model_id=mine"])
    plan = plan_serving(cfg, resolve_locally=True)
    assert plan.model_source == str(tiny_model_dir) and plan.model_id == "mine"
    with pytest.raises(UserError, match="not a Hugging Face model directory"):
        plan_serving(compose("serve", ["serve.model_path=/"]), resolve_locally=True)


def test_local_adapters_are_checked(adapter_dir, tmp_path):
    cfg = compose("serve", ["model=tiny-2l", f"serve.lora_adapters=[{{name:demo,path:{adapter_dir}}}]"])
    assert plan_serving(cfg, resolve_locally=True).adapters == {"demo": str(adapter_dir.resolve())}
    with pytest.raises(UserError, match="rank 8 > serve.max_lora_rank=1"):
        plan_serving(compose("serve", ["model=tiny-2l", "serve.max_lora_rank=1",
                                       f"serve.lora_adapters=[{{name:demo,path:{adapter_dir}}}]"]),
                     resolve_locally=True)
    with pytest.raises(UserError, match="no adapter_config.json"):
        fetch_adapter(str(tmp_path), "empty", tmp_path / "cache", 16)


def test_s3_model_and_adapter(s3_server, tiny_model_dir, adapter_dir, tmp_path):
    from rayloom import storage

    bucket = s3_server["bucket"]
    model_uri, adapter_uri = f"s3://{bucket}/plan/model", f"s3://{bucket}/plan/adapter"
    storage.commit_dir(tiny_model_dir, model_uri)
    storage.commit_dir(adapter_dir, adapter_uri)
    overrides = ["model=tiny-2l", f"serve.model_path={model_uri}", f"serve.lora_adapters=[{{name:a1,path:{adapter_uri}}}]",
                 f"model.cache_dir={tmp_path / 'cache'}"]
    cfg = compose("serve", overrides)
    # On a cluster the replicas fetch: the plan keeps the URIs, and still knows the window.
    remote = plan_serving(cfg, resolve_locally=False)
    assert remote.model_source == model_uri and remote.adapters == {"a1": adapter_uri}
    assert remote.max_model_len == 512
    # Embedded: fetched here, once, into the cache.
    local = plan_serving(cfg, resolve_locally=True)
    assert local.model_source.startswith(str(tmp_path / "cache"))
    assert json.loads((Path(local.adapters["a1"]) / "adapter_config.json").read_text())["r"] == 8
    again = fetch_adapter(adapter_uri, "a1", local.cache_dir, 16)
    assert str(again) == local.adapters["a1"]
    with pytest.raises(UserError, match="is not a committed rayloom artifact"):
        fetch_adapter(f"s3://{bucket}/plan/nothing", "x", tmp_path / "c2", 16)


def test_engine_and_deployment_settings_for_cpu_gpu_and_autoscaling(tiny_model_dir):
    cfg = compose("serve", ["model=tiny-2l", "serve.max_num_seqs=8", "+serve.engine_kwargs.seed=3"])
    plan = plan_serving(cfg, resolve_locally=True)
    kwargs = build_engine_kwargs(cfg.serve, plan)
    assert kwargs == {"dtype": "float32", "max_model_len": 512, "tensor_parallel_size": 1,
                      "enable_prefix_caching": True, "enforce_eager": True, "max_num_seqs": 8, "seed": 3}
    fixed = build_deployment_config(cfg.serve)
    assert fixed["num_replicas"] == 1 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 32 and fixed["max_queued_requests"] == 64

    gpu = compose("serve", ["model=tiny-2l", "serve=gpu", "serve.kv_cache_gib=2", "serve.min_replicas=0",
                            "serve.lora_adapters=[{name:a,path:/x}]"]).serve
    kwargs = build_engine_kwargs(gpu, plan)
    assert kwargs["kv_cache_memory_bytes"] == 2 * 2**30 and kwargs["gpu_memory_utilization"] == 0.9
    assert kwargs["enable_lora"] and kwargs["max_lora_rank"] == 16 and kwargs["max_loras"] == 4
    scaling = build_deployment_config(gpu)["autoscaling_config"]
    assert scaling["min_replicas"] == 0 and scaling["max_replicas"] == 4 and scaling["initial_replicas"] == 1
    assert scaling["target_ongoing_requests"] == 16
