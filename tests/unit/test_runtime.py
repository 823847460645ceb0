"""Runtime helpers that need no cluster: sizing, env forwarding, secrets by reference only."""

from __future__ import annotations

import platform

import pytest

from rayloom.config import ClusterConfig
from rayloom.errors import UserError
from rayloom.runtime import build_runtime_env, default_num_cpus


def test_import_platform_is_the_standard_library():
    assert platform.__file__.endswith("platform.py") and "site-packages" not in platform.__file__
    assert callable(platform.python_version)


def test_embedded_ray_gets_room_for_serve():
    assert default_num_cpus() >= 4


def test_runtime_env_forwards_non_secret_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-ship")
    env = build_runtime_env(ClusterConfig(env={"MY_FLAG": "1"}), working_dir=".")
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["env_vars"]["MY_FLAG"] == "1"
    assert "do-not-ship" not in repr(env)
    assert ".venv" in env["excludes"]


def test_secrets_are_refused_by_value():
    with pytest.raises(UserError, match="AWS_SECRET_ACCESS_KEY"):
        build_runtime_env(ClusterConfig(env={"AWS_SECRET_ACCESS_KEY": "x"}))


def test_dashboard_address_points_to_submit():
    from rayloom.runtime import init_ray

    with pytest.raises(UserError, match="rayloom submit"):
        init_ray(ClusterConfig(address="http://127.0.0.1:8265"))
