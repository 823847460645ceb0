"""`serve deploy` of the Serve config file `rayloom serve` writes, on a `ray start` head (issue #17
item 6): HAProxy runs through rayloom's launcher (`rayloom-haproxy`, named in the file), so the
config is hardened as under `rayloom serve`, and when Ray is stopped the way `ray stop --force`
stops it (SIGKILL to Ray's processes, HAProxy untouched) no HAProxy - the one a reload started
included - is left holding the port. Before, the reloaded HAProxy was reparented to init and kept
answering 500 on the port for 40+ minutes.

`ray stop --force` itself would end every Ray on this machine (the test session's included), so
the test SIGKILLs every process of the head's own process session except HAProxy, which is what
`ray stop --force` does to that head.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from helpers.cluster_fixtures import local_head

from rayloom.config import compose
from rayloom.ports import free_port
from rayloom.serve.cpu_placement import process_title
from rayloom.serve.serve_config import write_serve_config
from rayloom.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "deploy-key-5c2a-0123456789abcdef"
APP = "deployed"


def _session_of(pid: int) -> int:
    return os.getsid(pid)


def _in_session(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            if os.getsid(proc.pid) == sid and proc.pid != os.getpid():
                found.append(proc)
    return found


def _haproxies(sid: int) -> list[psutil.Process]:
    out = []
    for proc in _in_session(sid):
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.name() == "haproxy" and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def _listeners(port: int) -> list[str]:
    """Who listens on `port` (pid and command line, when the kernel says)."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            try:
                who = " ".join(psutil.Process(conn.pid).cmdline()) if conn.pid else "unknown process"
            except psutil.Error:
                who = f"pid {conn.pid}"
            found.append(f"{conn.pid}: {who}")
    return found


def test_serve_deploy_on_a_ray_start_head_leaves_no_haproxy_after_ray_is_killed(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    port = free_port()
    monkeypatch.setenv("RAYLOOM_API_KEY", KEY)  # the head's environment: the ingress reads the key there
    cfg = compose("serve", ["model=tiny-2l", f"serve.port={port}", f"serve.app_name={APP}",
                            "serve.max_model_len=512", "serve.max_prompt_tokens=200", f"storage.root={tmp_path / 'runs'}"])
    config = write_serve_config(cfg, tmp_path / "serve_config.yaml")
    assert "rayloom-haproxy" in Path(config).read_text()

    with local_head(tmp_path / "head", "--num-cpus", "4") as head:
        sid = _session_of(head.pid)
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": head.token_path}
        env.pop("RAY_ADDRESS", None)
        deploy = subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", config, "--address", head.dashboard_url], env=env,
                                capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5,
                                 headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
            return False

        wait_until(answers, 900, interval_s=2, message="the deployed app to answer on its port")
        first = _haproxies(sid)
        assert first, "Serve runs no HAProxy for the deployed app"
        config_file = next(arg for arg in first[0].cmdline()[1:] if arg.endswith(".cfg"))
        assert "timeout http-request" in Path(config_file).read_text()  # hardened by rayloom's launcher

        # A replica restart makes Serve reload HAProxy: a new process started with `-sf <old pid>`.
        replicas = [p for p in _in_session(sid) if process_title(p).startswith(f"ray::ServeReplica:{APP}:")]
        assert replicas
        for replica in replicas:
            replica.kill()
        old = {p.pid for p in first}
        wait_until(lambda: any(p.pid not in old and "-sf" in p.cmdline() for p in _haproxies(sid)), 300,
                   interval_s=0.5, message="HAProxy to reload after the replica died")

        # `ray stop --force` on this head: every Ray process SIGKILLed, HAProxy left alone.
        for proc in _in_session(sid):
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.name() != "haproxy":
                    proc.send_signal(signal.SIGKILL)
        wait_until(lambda: not _haproxies(sid), 60, interval_s=0.5,
                   message=lambda: f"HAProxy to stop with Ray: {[p.cmdline() for p in _haproxies(sid)]}")
        # Nothing listens on the port any more, so the next deploy can take it. Checked as "no
        # listener" rather than by binding it: a bind also fails while any process's outgoing
        # connection happens to use the port as its source port, which says nothing about HAProxy.
        wait_until(lambda: not _listeners(port), 60, interval_s=0.5,
                   message=lambda: f"port {port} to be free, still listening: {_listeners(port)}")
