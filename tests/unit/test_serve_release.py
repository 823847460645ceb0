"""Releases, rollout settings, the adapter store and the `rayloom serve <verb>` CLI, without Ray."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.serve_fixtures import make_lora_adapter

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.serve import adapter_store, release
from rayloom.serve.app import build_deployment_config
from rayloom.serve.deployment_plan import ServePlan
from rayloom.serve.limits import RequestLimits


def _plan(source: str = "/models/a", lineage: str | None = "lin-a") -> ServePlan:
    return ServePlan(model_id="tiny-2l", model_source=source, tokenizer_source=source, max_model_len=512, adapters={},
                     limits=RequestLimits(), cache_dir="/tmp", lineage={"id": lineage} if lineage else None)


def test_rollouts_start_new_replicas_before_old_ones_stop():
    config = build_deployment_config(compose("serve", []).serve)
    assert config["max_surge_percent"] == 100 and config["rolling_update_percentage"] == 1.0
    assert config["graceful_shutdown_timeout_s"] == 60.0
    with pytest.raises(Exception, match="rollout_max_surge_percent"):
        compose("serve", ["serve.rollout_max_surge_percent=150"])


def test_release_version_follows_what_the_replicas_are_built_from():
    cfg = compose("serve", ["model=tiny-2l"])
    version = release.release_version(cfg, _plan(), None)
    assert version == release.release_version(cfg, _plan(), None)
    assert version != release.release_version(cfg, _plan(source="/models/b"), None)
    assert version != release.release_version(cfg, _plan(lineage="lin-b"), None)
    scaled = compose("serve", ["model=tiny-2l", "serve.max_replicas=3"])
    assert release.release_version(scaled, _plan(), None) == version  # Serve applies this in place
    limited = compose("serve", ["model=tiny-2l", "serve.max_tokens_limit=32", "serve.default_max_tokens=16"])
    assert release.release_version(limited, _plan(), None) != version


def test_release_record_keeps_the_previous_version_for_rollback(tmp_path):
    first = compose("serve", ["model=tiny-2l", f"storage.root={tmp_path}", "serve.model_path=/models/a"])
    second = compose("serve", ["model=tiny-2l", f"storage.root={tmp_path}", "serve.model_path=/models/b"])
    with pytest.raises(UserError, match="no release recorded"):
        release.previous_release(release.read_releases(first))
    release.record_release(first, _plan("/models/a"), "v-a", action="deploy")
    with pytest.raises(UserError, match="nothing to roll back to"):
        release.previous_release(release.read_releases(first))
    release.record_release(second, _plan("/models/b", "lin-b"), "v-b", action="promote")
    release.record_release(second, _plan("/models/b", "lin-b"), "v-b", action="deploy")  # same version: no entry
    releases = release.read_releases(first)
    assert [r["version"] for r in releases] == ["v-a", "v-b"]
    previous = release.previous_release(releases)
    assert previous["version"] == "v-a" and previous["lineage_id"] == "lin-a"
    back = release.config_of(previous, dataclasses.replace(second, serve=dataclasses.replace(second.serve,
                                                                                                blocking=False)))
    assert back.serve.model_path == "/models/a" and back.serve.blocking is False
    text = release.format_status("rayloom", {"status": "RUNNING", "deployments": {
        "LLMServer:tiny-2l": {"status": "HEALTHY", "replicas": {"RUNNING": 1}}}}, releases)
    assert "active: v-b" in text and "previous: v-a" in text and "1 running" in text


def test_publish_and_unpublish_adapters_in_the_s3_store(s3_server, tiny_model_dir, tmp_path):
    store = f"s3://{s3_server['bucket']}/adapters"
    serve = compose("serve", [f"serve.lora_dynamic_path={store}"]).serve
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    uri = adapter_store.publish(serve, str(adapter), "sql", cache_dir=tmp_path / "cache")
    assert uri == f"{store}/sql" and adapter_store.list_published(serve) == ["sql"]
    cache = adapter_store.PublishedCache(store, ttl_s=0)
    assert cache.is_published("sql") and not cache.is_published("other") and not cache.is_published("../x")
    with pytest.raises(UserError, match="already published"):
        adapter_store.publish(serve, str(adapter), "sql", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="letters, digits"):
        adapter_store.publish(serve, str(adapter), "a/b", cache_dir=tmp_path / "cache")
    adapter_store.unpublish(serve, "sql")
    assert adapter_store.list_published(serve) == [] and not cache.is_published("sql")
    with pytest.raises(UserError, match="not published"):
        adapter_store.unpublish(serve, "sql")
    with pytest.raises(UserError, match="lora_dynamic_path"):
        adapter_store.publish(compose("serve", []).serve, str(adapter), "x", cache_dir=tmp_path)


def test_a_half_uploaded_adapter_is_neither_published_nor_loaded(s3_server, tiny_model_dir, tmp_path):
    """Files under the store without a commit marker (an upload cut off, another tool's copy) are not
    an adapter: the ingress does not admit the name and a replica's loader refuses it."""
    from rayloom import storage
    from rayloom.serve.adapters import fetch_adapter

    store = f"s3://{s3_server['bucket']}/adapters-half"
    serve = compose("serve", [f"serve.lora_dynamic_path={store}"]).serve
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    storage.upload_dir(adapter, f"{store}/half")
    assert adapter_store.list_published(serve) == []
    assert not adapter_store.PublishedCache(store, ttl_s=0).is_published("half")
    with pytest.raises(UserError, match="is not a committed rayloom artifact"):
        fetch_adapter(f"{store}/half", "half", tmp_path / "cache", 16)
    adapter_store.publish(serve, str(adapter), "whole", cache_dir=tmp_path / "cache")
    loaded = fetch_adapter(f"{store}/whole", "whole", tmp_path / "cache", 16)
    assert (loaded / "adapter_config.json").is_file() and adapter_store.list_published(serve) == ["whole"]


def test_serve_verbs_route_to_serve_admin_and_overrides_still_deploy(capsys):
    from rayloom.cli import build_parser, main

    assert build_parser().parse_args(["serve", "serve.model_path=/m"]).command == "serve"
    # Acting on a running app needs a cluster that outlives the command: a clear error, exit 2.
    assert main(["serve", "status"]) == 2
    assert "cluster.address" in capsys.readouterr().err
    assert main(["serve", "rollback", "serve.app_name=x"]) == 2


def test_promote_refuses_a_model_without_a_passing_evaluation_before_touching_ray(tmp_path):
    from rayloom.eval import GateFailed
    from rayloom.serve.admin import promote

    cluster = ["model=tiny-2l", f"storage.root={tmp_path}", "cluster.address=ray://127.0.0.1:1"]
    with pytest.raises(UserError, match="sets no thresholds"):
        promote(compose("serve", cluster))
    with pytest.raises(GateFailed, match="no evaluation"):
        promote(compose("serve", [*cluster, "+eval.gate.min={demo_add/exact_match:0.8}"]))


def test_sigterm_becomes_a_keyboard_interrupt_only_inside_the_block():
    import os
    import signal
    import time

    from rayloom.serve.deploy import ServerStopped, stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ServerStopped), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler long before this ends
    assert issubclass(ServerStopped, KeyboardInterrupt)  # handled like Ctrl-C, never a traceback
    assert signal.getsignal(signal.SIGTERM) is before
