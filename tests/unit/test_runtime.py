"""Runtime helpers that need no cluster: sizing, env forwarding, secrets by reference only."""

from __future__ import annotations

import platform

import pytest

from rayloom.config import ClusterConfig
from rayloom.errors import UserError
from rayloom.runtime import auth_headers, build_runtime_env, default_num_cpus, read_auth_token


def test_import_platform_is_the_standard_library():
    assert platform.__file__.endswith("platform.py") and "site-packages" not in platform.__file__
    assert callable(platform.python_version)


@pytest.mark.parametrize("cores,expected", [(None, 4), (1, 4), (2, 4), (3, 6), (8, 16)])
def test_embedded_ray_gets_room_for_serve(monkeypatch, cores, expected):
    # Two logical CPUs per core, and at least 4 (ingress + engine + trainer controller + a worker).
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_num_cpus() == expected


def test_one_token_reader_follows_rays_order(monkeypatch, tmp_path):
    explicit, ray_path = tmp_path / "explicit", tmp_path / "ray_token"
    explicit.write_text("from-file\n")
    ray_path.write_text("from-ray-path")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert read_auth_token() == "" and auth_headers() == {}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_path))
    assert read_auth_token() == "from-ray-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert read_auth_token() == "from-env"
    assert auth_headers(explicit) == {"Authorization": "Bearer from-file"}  # a configured path wins


def test_a_configured_token_file_must_exist_and_hold_a_token(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_auth_token(tmp_path / "nope")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        read_auth_token(tmp_path / "empty")


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


@pytest.mark.parametrize("env", [{"WANDB_API_KEY": "x"}, {"HUGGING_FACE_HUB_TOKEN": "x"},
                                 {"MLFLOW_TRACKING_PASSWORD": "x"}, {"MY_SERVICE_TOKEN": "x"},
                                 {"HARMLESS": "hf_abcdefghijklmnopqrstuvwxyz0123"},
                                 {"DB_URI": "postgresql://u:pw@db/mlflow"}])
def test_credential_names_and_values_are_refused_in_cluster_env(env):
    name = next(iter(env))
    with pytest.raises(UserError, match=name) as refused:
        build_runtime_env(ClusterConfig(env=env))
    assert env[name] not in str(refused.value) and "by reference" in str(refused.value)


def test_the_configured_api_key_variable_is_refused_whatever_its_name():
    from rayloom.runtime import build_env_vars

    with pytest.raises(UserError, match="SERVING_GATE"):
        build_env_vars(ClusterConfig(env={"SERVING_GATE": "abc"}), secret_names={"SERVING_GATE"})
    with pytest.raises(UserError, match="GATE_X"):
        build_env_vars(ClusterConfig(env={"GATE_X": "abc"}, secret_env=[]), secret_names={"GATE_X"})


def test_a_forwarded_variable_holding_credentials_stays_here(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:pw-in-url@127.0.0.1:9000")
    env = build_runtime_env(ClusterConfig())
    assert "AWS_ENDPOINT_URL" not in env["env_vars"]
    assert "not forwarding AWS_ENDPOINT_URL" in caplog.text and "pw-in-url" not in caplog.text


def test_embedded_ray_binds_loopback(monkeypatch):
    """ray.init gets node IP 127.0.0.1 with Ray's multi-node switch off, so its gRPC servers bind
    127.0.0.1 (tests/integration/test_runtime_ray.py runs the real thing); the switch is restored."""
    import ray
    from ray._private import ray_constants

    from rayloom.runtime import init_ray

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs, multi_node=ray_constants.ENABLE_RAY_CLUSTER)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    assert init_ray(ClusterConfig(num_cpus=4)) is True
    assert seen["_node_ip_address"] == "127.0.0.1" and seen["multi_node"] is False
    assert ray_constants.ENABLE_RAY_CLUSTER is before


def _init_kwargs(monkeypatch, cluster: ClusterConfig) -> dict:
    """What init_ray passes to ray.init (the real start is tests/integration/test_runtime_ray.py)."""
    import ray

    from rayloom.runtime import init_ray

    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    init_ray(cluster)
    return seen


def test_embedded_ray_runs_the_worker_hook_and_no_preemption_watcher(monkeypatch):
    from rayloom.runtime import EMBEDDED_WORKER_SETUP, PREEMPTION_WATCHER_ENV

    env = _init_kwargs(monkeypatch, ClusterConfig(num_cpus=4))["runtime_env"]
    assert env["worker_process_setup_hook"] == EMBEDDED_WORKER_SETUP and env["env_vars"][PREEMPTION_WATCHER_ENV] == "0"
    # The user's setting wins; with a dashboard the state API works and no hook is needed.
    env = _init_kwargs(monkeypatch, ClusterConfig(num_cpus=4, include_dashboard=True,
                                                  env={PREEMPTION_WATCHER_ENV: "1"}))["runtime_env"]
    assert "worker_process_setup_hook" not in env and env["env_vars"][PREEMPTION_WATCHER_ENV] == "1"
    # A cluster rayloom connects to keeps Ray's defaults: its nodes can be drained.
    env = _init_kwargs(monkeypatch, ClusterConfig(address="127.0.0.1:6379"))["runtime_env"]
    assert "worker_process_setup_hook" not in env and PREEMPTION_WATCHER_ENV not in env["env_vars"]
