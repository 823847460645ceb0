"""The serve group's schema, and the Serve config file rendered for `serve deploy` / KubeRay."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rayloom.config import compose
from rayloom.errors import UserError


@pytest.mark.parametrize(("override", "key"), [
    ("serve.port=0", "serve.port"),
    ("serve.dtype=int4", "serve.dtype"),
    ("serve.model_id=a:b", "serve.model_id"),
    ("serve.route_prefix=v1", "serve.route_prefix"),
    ("serve.max_replicas=0", "serve.max_replicas"),
    ("serve.max_queued_requests=-1", "serve.max_queued_requests"),
    ("serve.max_lora_rank=12", "serve.max_lora_rank"),
    ("serve.default_max_tokens=1000", "serve.default_max_tokens"),
    ("serve.max_prompt_tokens=2000", "serve.max_prompt_tokens"),
    ("serve.gpu_memory_utilization=1.5", "serve.gpu_memory_utilization"),
    ("serve.accelerator_type=H100", "serve.accelerator_type"),
    ("serve.engine_num_cpus=0", "serve.engine_num_cpus"),
    ("serve.stream_batching_interval_ms=-1", "serve.stream_batching_interval_ms"),
    ("serve.engine_core_placement=core0", "serve.engine_core_placement"),
    ("serve.http_ingress=nginx", "serve.http_ingress"),
    ("serve.lora_dynamic_path=/local/dir", "serve.lora_dynamic_path"),
    ("serve.lora_adapters=[{name:'a:b',path:/x}]", "serve.lora_adapters[].name"),
    ("serve.lora_adapters=[{name:a,path:/x},{name:a,path:/y}]", "serve.lora_adapters"),
    ("+serve.engine_kwargs.model=/other", "serve.engine_kwargs.model"),
])
def test_bad_serve_values_fail_naming_the_key(override, key):
    with pytest.raises(UserError, match=f"invalid config value {re.escape(key)}="):
        compose("serve", [override])


def test_presets_compose():
    cpu = compose("serve", ["serve=cpu"]).serve
    gpu = compose("serve", ["serve=gpu", "serve.accelerator_type=A10G"]).serve
    assert not cpu.use_gpu and cpu.kv_cache_gib == 1 and cpu.enforce_eager
    assert gpu.use_gpu and gpu.host == "0.0.0.0" and gpu.max_replicas == 4 and gpu.kv_cache_gib == 0
    assert not cpu.uses_lora
    assert compose("serve", ["serve.lora_dynamic_path=s3://b/adapters"]).serve.uses_lora


def test_serve_config_file_is_a_valid_serve_deploy_schema(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    from rayloom.serve.app import config_from_args
    from rayloom.serve.serve_config import render_serve_config, render_serve_config_yaml

    monkeypatch.setenv("RAYLOOM_API_KEY", "do-not-write-me")
    cfg = compose("serve", ["model=hf", "model.path=s3://bucket/models/final", "serve=gpu",
                            "serve.lora_adapters=[{name:sql,path:s3://bucket/adapters/sql}]",
                            "serve.api_key_file=/etc/rayloom/keys", "+cluster.env.HF_HUB_OFFLINE='1'"])
    rendered = render_serve_config(cfg)
    schema = ServeDeploySchema.model_validate(rendered)
    app = schema.applications[0]
    assert app.import_path == "rayloom.serve.app:app_builder" and app.name == "rayloom"
    assert rendered["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert app.runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"  # non-secret env, as jobs get it
    # Serve's ingress and throughput settings reach the controller, and through it HAProxy and the
    # HTTP proxies; a cluster keeps Ray's own ports for HAProxy's side listeners.
    controller_env = dict(schema.controller_options.runtime_env["env_vars"])
    launcher = {k: controller_env.pop(k) for k in list(controller_env) if "HAPROXY_BINARY" in k or "RAYLOOM_" in k}
    assert controller_env == {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                              "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "300"}
    # HAProxy through rayloom's launcher (tests/unit/test_serve_haproxy_guard.py runs it).
    assert launcher["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("/rayloom-haproxy")
    off = render_serve_config(compose("serve", ["serve.throughput_optimized=false", "serve.http_ingress=proxy"]))
    assert "controller_options" not in off
    # The args rebuild exactly the typed config on the cluster.
    rebuilt = config_from_args(app.args)
    assert rebuilt.serve == cfg.serve and rebuilt.model == cfg.model
    text = render_serve_config_yaml(cfg)
    assert "do-not-write-me" not in text and "$RAYLOOM_API_KEY" in text
    assert yaml.safe_load(text) == rendered


def test_serve_config_args_are_validated():
    from rayloom.serve.app import config_from_args

    with pytest.raises(UserError, match="unknown keys \\['train'\\]"):
        config_from_args({"serve": {}, "train": {}})
    with pytest.raises(UserError, match="serve.port"):
        config_from_args({"serve": {"port": 99999}})
    with pytest.raises(UserError):
        config_from_args({"serve": {"no_such_key": 1}})


def test_write_serve_config_defaults_under_the_storage_root(tmp_path):
    from rayloom.serve.serve_config import write_serve_config

    cfg = compose("serve", [f"storage.root={tmp_path}", "serve.app_name=demo"])
    path = write_serve_config(cfg)
    assert path == str(tmp_path / "serve" / "demo" / "serve_config.yaml")
    assert yaml.safe_load(Path(path).read_text())["applications"][0]["name"] == "demo"


def test_secrets_in_cluster_env_are_refused():
    from rayloom.serve.serve_config import render_serve_config

    cfg = compose("serve", ["+cluster.env.RAYLOOM_API_KEY=oops"])
    with pytest.raises(UserError, match="secrets are never sent by value"):
        render_serve_config(cfg)


@pytest.mark.parametrize(("overrides", "replica", "controller"), [
    ([], {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
     {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "300"}),
    (["serve.http_ingress=proxy"], {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
     {"RAY_SERVE_PROXY_USE_GRPC": "1"}),
    (["serve.throughput_optimized=false"], {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
     {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "300"}),
    (["serve.throughput_optimized=false", "serve.http_ingress=proxy"], {}, {}),
])
def test_ingress_and_throughput_settings_become_serve_environment(overrides, replica, controller):
    """HAProxy mode needs its flag in the controller (which runs HAProxy) and in the replicas (which
    then serve HTTP on their own ports); the Python proxy keeps the replicas' direct ingress off."""
    from rayloom.serve.app import controller_env_vars, replica_env_vars

    serve = compose("serve", overrides).serve
    assert replica_env_vars(serve) == replica and controller_env_vars(serve) == controller


def test_a_taken_port_is_found_in_the_proxy_and_haproxy_errors():
    from rayloom.serve.deploy import _address_in_use as address_in_use
    from rayloom.serve.deploy import _embedded_haproxy_ports as embedded_haproxy_ports

    assert address_in_use("RuntimeError: Failed to bind to address '127.0.0.1:8500'.") == "127.0.0.1:8500"
    haproxy = ("RuntimeError: HAProxy crashed during startup: [ALERT] (1959) : Binding [/tmp/h/haproxy.cfg:50] for "
               "frontend http_frontend: cannot bind socket (Address already in use) for [127.0.0.1:8123]")
    assert address_in_use(haproxy) == "127.0.0.1:8123"
    assert address_in_use("RuntimeError: HAProxy crashed during startup: bad config") is None
    ports = embedded_haproxy_ports("127.0.0.1", 8000)
    assert set(ports) == {"RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                          "RAY_SERVE_HAPROXY_STATS_PORT"}
    # Distinct, and never serve.port (not bound yet when they are picked).
    assert len({*ports.values(), "8000"}) == 4 and all(0 < int(port) < 65536 for port in ports.values())
