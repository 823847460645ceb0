"""rayloom.serve.haproxy_guard on the config Ray 2.60 really renders (no Ray started, no listener).

The hardened config must still be one HAProxy accepts (`haproxy -c`), with the admin socket
owner-only, no stats/Prometheus listener unless asked for (then on serve.host only) and a
`timeout http-request`; the launcher must hand Ray's own arguments to the real binary.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from rayloom.serve import haproxy_guard


@pytest.fixture
def ray_config(tmp_path) -> str:
    """The haproxy.cfg Ray's HAProxyApi renders for an HTTP ingress on 127.0.0.1."""
    from ray.serve._private.haproxy import (  # Ray's renderer, as the controller uses it
        HAProxyApi,
        HAProxyConfig,
    )
    from ray.serve.config import HTTPOptions

    d = tmp_path / "hap"
    d.mkdir()
    cfg = HAProxyConfig(http_options=HTTPOptions(host="127.0.0.1", port=18123), socket_path=f"{d}/admin.sock",
                        server_state_base=str(d), server_state_file=f"{d}/server-state",
                        metrics_socket_path=f"{d}/metrics.sock")
    api = HAProxyApi(cfg=cfg, config_file_path=f"{d}/haproxy.cfg")
    api._generate_config_file_internal()
    return (d / "haproxy.cfg").read_text()


def _binds(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind ")]


def test_ray_renders_the_defaults_the_guard_exists_for(ray_config):
    assert "mode 666 level admin" in ray_config
    assert "*:8404" in _binds(ray_config) and ":9101" in _binds(ray_config)
    assert "timeout http-request" not in ray_config


def test_hardened_config_has_private_socket_no_side_listeners_and_a_request_timeout(ray_config, tmp_path):
    text = haproxy_guard.harden_config(ray_config, bind_host="127.0.0.1", status_pages=False,
                                       http_request_timeout_s=7)
    assert "mode 600 level admin" in text and "mode 666" not in text
    assert _binds(text) == ["127.0.0.1:18123"]
    assert "listen stats" not in text and "frontend prometheus" not in text
    assert text.count("timeout http-request 7s") == 1
    # Idempotent: Ray rewrites the file before each reload, the launcher hardens it each time.
    assert haproxy_guard.harden_config(text, bind_host="127.0.0.1", status_pages=False,
                                       http_request_timeout_s=7) == text
    _haproxy_accepts(text, tmp_path)


def test_status_pages_when_asked_for_bind_serve_host_only(ray_config, tmp_path):
    text = haproxy_guard.harden_config(ray_config, bind_host="127.0.0.1", status_pages=True,
                                       http_request_timeout_s=10)
    assert sorted(_binds(text)) == ["127.0.0.1:18123", "127.0.0.1:8404", "127.0.0.1:9101"]
    _haproxy_accepts(text, tmp_path)


def _haproxy_accepts(text: str, tmp_path) -> None:
    path = tmp_path / "check.cfg"
    path.write_text(text)
    binary = haproxy_guard.real_haproxy_binary()
    result = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_private_dir_is_0700_and_short_enough_for_ray_socket_paths():
    directory = haproxy_guard.private_dir()
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert directory.stat().st_uid == os.getuid()
        # Ray adds "/<56-hex node id>/metrics.sock"; AF_UNIX paths hold 107 bytes.
        assert len(str(directory)) + 1 + 56 + len("/metrics.sock") < 107
    finally:
        directory.rmdir()


def test_env_puts_every_haproxy_file_in_the_private_dir(tmp_path):
    env = haproxy_guard.haproxy_env(tmp_path, tmp_path / "haproxy", client_timeout_s=300)
    for name in ("CONFIG_FILE_LOC", "SOCKET_PATH", "METRICS_SOCKET_PATH", "SERVER_STATE_BASE", "SERVER_STATE_FILE"):
        assert env[f"RAY_SERVE_HAPROXY_{name}"].startswith(str(tmp_path))
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(tmp_path / "haproxy")
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "300"


def test_launcher_hardens_the_config_and_execs_the_real_binary_with_rays_arguments(ray_config, tmp_path):
    """A stand-in "real haproxy" records its argv and pid; the launcher must exec it (same pid)."""
    record = tmp_path / "argv"
    fake = tmp_path / "fake-haproxy"
    fake.write_text(f"#!/bin/sh\necho $$ \"$@\" > {record}\n")
    fake.chmod(0o700)
    launcher = haproxy_guard.write_launcher(tmp_path, real_binary=str(fake), bind_host="127.0.0.1",
                                            status_pages=False, http_request_timeout_s=5)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o700
    config = tmp_path / "haproxy.cfg"
    config.write_text(ray_config)
    proc = subprocess.Popen([str(launcher), "-db", "-f", str(config), "-sf", "123"])
    assert proc.wait(timeout=60) == 0
    pid, *argv = record.read_text().split()
    assert int(pid) == proc.pid and argv == ["-db", "-f", str(config), "-sf", "123"]
    hardened = config.read_text()
    assert "timeout http-request 5s" in hardened and "listen stats" not in hardened
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_stop_leftover_haproxy_stops_only_processes_with_a_config_in_the_dir(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    # Processes whose command line names a config file, as haproxy's does ("-f <path>").
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    ours = subprocess.Popen([*sleeper, "-f", f"{mine}/haproxy.cfg"])
    other = subprocess.Popen([*sleeper, "-f", f"{tmp_path}/elsewhere.cfg"])
    try:
        assert haproxy_guard.stop_leftover_haproxy(mine, timeout_s=10) == [ours.pid]
        assert ours.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_the_installed_command_is_the_launcher_and_the_serve_config_names_it(ray_config, tmp_path):
    """`rayloom-haproxy` (what a Serve config file sets as Serve's HAProxy binary, so `serve deploy`
    gets the launcher too) hardens and execs like the written launcher; settings come from the
    controller's environment as the Serve config sets them."""
    from rayloom.config import compose
    from rayloom.serve.serve_config import IMAGE_HAPROXY_LAUNCHER, local_haproxy_launcher, render_serve_config

    command = local_haproxy_launcher()
    assert command is not None, "rayloom-haproxy is not installed: rerun scripts/bootstrap.sh (pip install -e .)"
    record, fake = tmp_path / "argv", tmp_path / "fake-haproxy"
    fake.write_text(f"#!/bin/sh\necho $$ \"$@\" > {record}\n")
    fake.chmod(0o700)
    config = tmp_path / "haproxy.cfg"
    config.write_text(ray_config)
    cfg = compose("serve", ["model=tiny-2l", "serve.http_ingress=haproxy", "serve.http_request_timeout_s=7"])
    env = render_serve_config(cfg)["controller_options"]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == command and env["RAYLOOM_HAPROXY_BIND_HOST"] == "127.0.0.1"
    portable = render_serve_config(cfg, for_cluster=True)["controller_options"]["runtime_env"]["env_vars"]
    assert portable["RAY_SERVE_HAPROXY_BINARY_PATH"] == IMAGE_HAPROXY_LAUNCHER
    launcher_env = {k: v for k, v in env.items() if k.startswith("RAYLOOM_HAPROXY_")}
    proc = subprocess.Popen([command, "-db", "-f", str(config)],
                            env={**os.environ, **launcher_env, "RAYLOOM_HAPROXY_REAL_BINARY": str(fake)})
    assert proc.wait(timeout=60) == 0
    pid, *argv = record.read_text().split()
    assert int(pid) == proc.pid and argv == ["-db", "-f", str(config)]
    assert "timeout http-request 7s" in config.read_text()
    # As Serve runs it (RAY_SERVE_HAPROXY_BINARY_PATH names the launcher itself, no real binary
    # given): it reaches the real haproxy instead of exec'ing itself forever.
    real = subprocess.run([command, "-v"], env={**os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": command},
                          capture_output=True, text=True, timeout=30)
    assert real.returncode == 0 and "HAProxy version" in real.stdout, real.stderr
    # Without http_ingress=haproxy nothing of it is written.
    proxy = render_serve_config(compose("serve", ["model=tiny-2l", "serve.http_ingress=proxy"]))
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in str(proxy)


def test_the_cluster_image_installs_the_launcher_where_the_portable_config_expects_it():
    from helpers import REPO_ROOT

    from rayloom.serve.serve_config import IMAGE_HAPROXY_LAUNCHER

    dockerfile = (REPO_ROOT / "cluster" / "Dockerfile").read_text()
    assert "VIRTUAL_ENV=/opt/venv" in dockerfile and "pip install --no-deps -e ." in dockerfile
    assert IMAGE_HAPROXY_LAUNCHER == "/opt/venv/bin/rayloom-haproxy"
