"""`rayloom serve`: deploy the app on the embedded Ray or cluster.address, block or detach.

`deploy(cfg)` puts the application on the Ray cluster this process is connected to and waits
until every replica is up; `run_serve_job(cfg)` is the whole job: check keys, write the
equivalent Serve config file, connect/start Ray, deploy, prove a generation works, print the
endpoint, then either block until Ctrl-C (and take the app down) or return, leaving the app on
a cluster that outlives this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayloom.config import RayloomConfig, ServeConfig
from rayloom.errors import UserError
from rayloom.eval import check_deploy_gate
from rayloom.lineage import describe
from rayloom.openai_client import api_base
from rayloom.ports import free_port
from rayloom.runtime import ray_session
from rayloom.serve.app import build_app, controller_env_vars
from rayloom.serve.auth import AuthSettings, read_api_keys, resolve_auth
from rayloom.serve.deployment_plan import ServePlan, is_embedded, plan_serving
from rayloom.serve.haproxy_guard import (
    haproxy_env,
    private_dir,
    real_haproxy_binary,
    stop_leftover_haproxy,
    write_launcher,
)
from rayloom.serve.release import record_release, release_version
from rayloom.serve.serve_config import write_serve_config
from rayloom.waiting import wait_until

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """A deployed endpoint: its OpenAI base URL and the model ids it serves."""

    base_url: str  # OpenAI base URL, ".../v1"
    model_id: str
    app_name: str
    adapters: tuple[str, ...] = ()
    # The private directory of the HAProxy this deploy started (embedded Ray), "" otherwise.
    haproxy_dir: str = ""
    # The Serve deployment version deployed (rayloom.serve.release.release_version).
    version: str = ""

    @property
    def model_ids(self) -> list[str]:
        return [self.model_id] + [f"{self.model_id}:{name}" for name in self.adapters]


def deploy(cfg: RayloomConfig, *, auth: AuthSettings | None = None, plan: ServePlan | None = None) -> Endpoint:
    """Deploy `cfg.serve` on the connected Ray cluster and wait until it is running.

    `auth` defaults to the keys this process sees; `plan` to `plan_serving(cfg)`.
    """
    from ray import serve as ray_serve  # here: Ray only when deploying

    serve = cfg.serve
    plan = plan or plan_serving(cfg)
    auth = auth or resolve_auth(serve.require_api_key, serve.api_key_env, serve.api_key_file)
    app = build_app(cfg, auth=auth, plan=plan)
    # Cluster-wide HTTP options; Serve keeps its own when it already runs on this cluster.
    controller_env = controller_env_vars(serve)
    haproxy_dir = ""
    if serve.http_ingress == "haproxy" and is_embedded(cfg.cluster) and not _serve_running():
        controller_env.update(_embedded_haproxy_ports(serve.host, serve.port))
        haproxy_env, haproxy_dir = _hardened_haproxy(serve)
        controller_env.update(haproxy_env)
    try:
        ray_serve.start(http_options={"host": serve.host, "port": serve.port},
                        controller_options={"runtime_env": {"env_vars": controller_env}} if controller_env else None)
    except Exception as exc:
        address = _address_in_use(str(exc))
        if address:
            raise UserError(f"Serve could not listen on {address}: the port is in use by another process "
                            f"(serve.host={serve.host}, serve.port={serve.port}); pick a free serve.port") from None
        raise
    serve = _actual_http_address(serve)
    log.info("deploying %s (model %s from %s)", serve.app_name, plan.model_id, plan.model_source)
    start = time.monotonic()
    ray_serve.run_many([ray_serve.RunTarget(target=app, name=serve.app_name, route_prefix=serve.route_prefix)],
                       wait_for_applications_running=False)
    _wait_until_running(serve.app_name, serve.ready_timeout_s)
    log.info("%s is running after %.0fs", serve.app_name, time.monotonic() - start)
    return Endpoint(base_url=endpoint_url(serve), model_id=plan.model_id, app_name=serve.app_name,
                    adapters=tuple(plan.adapters), haproxy_dir=haproxy_dir,
                    version=release_version(cfg, plan, auth))


def _serve_running() -> bool:
    """Whether Serve already runs on the connected cluster (then its HTTP settings stay as they are)."""
    # here: the compat module imports Ray Serve LLM (vLLM, torch); `import rayloom.serve` stays light
    from rayloom.serve._ray_llm_compat import serve_controller_running

    return serve_controller_running()


def _hardened_haproxy(serve: ServeConfig) -> tuple[dict[str, str], str]:
    """Controller env putting HAProxy's files in a private 0700 directory behind rayloom's launcher."""
    directory = private_dir()
    launcher = write_launcher(directory, real_binary=real_haproxy_binary(), bind_host=serve.host,
                              status_pages=serve.haproxy_status_pages,
                              http_request_timeout_s=serve.http_request_timeout_s)
    return haproxy_env(directory, launcher, client_timeout_s=serve.client_timeout_s), str(directory)


def _address_in_use(message: str) -> str | None:
    """The host:port a failed `serve.start` could not bind, from the Python proxy's or HAProxy's error."""
    found = (re.search(r"[Ff]ailed to bind to address '([^']+)'", message)
             or re.search(r"cannot bind socket \(Address already in use\) for \[([^\]]+)\]", message))
    return found.group(1) if found else None


def _embedded_haproxy_ports(host: str, serve_port: int) -> dict[str, str]:
    """Free ports for the fixed ones Serve's HAProxy mode also opens, on a one-machine Ray.

    Besides serve.port it starts a Python fallback proxy on 8500, HAProxy's Prometheus exporter
    on :9101 (the haproxy_exporter's customary port) and its stats page on :8404; any of them
    taken by something else on a workstation made `serve.start` fail. A cluster keeps Ray's
    documented ports. (The stats and Prometheus listeners are only opened, on serve.host, with
    serve.haproxy_status_pages=true: rayloom.serve.haproxy_guard.) serve.port is not bound yet
    when they are picked, so it is excluded by name; free_port never hands out a port twice.
    """
    return {"RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port(exclude=(serve_port,))),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port(host, exclude=(serve_port,))),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port(host, exclude=(serve_port,)))}


def _actual_http_address(serve: ServeConfig) -> ServeConfig:
    """`serve` with the host/port Serve really listens on (they differ when Serve was already up)."""
    # here: the compat module imports Ray Serve LLM (vLLM, torch); `import rayloom.serve` stays light
    from rayloom.serve._ray_llm_compat import serve_http_address

    actual = serve_http_address()
    if actual is None or actual == (serve.host, serve.port):
        return serve
    host, port = actual
    log.warning("Serve already runs on this cluster at %s:%s; serve.host/serve.port (%s:%s) are not applied",
                host, port, serve.host, serve.port)
    return dataclasses.replace(serve, host=host, port=port)


def _wait_until_running(app_name: str, timeout_s: float) -> None:
    """Poll Serve until the app runs; a failed deploy raises with Serve's own messages."""
    from ray import serve as ray_serve  # here: Ray only when deploying

    last = {"status": "NOT_STARTED"}

    def running() -> bool:
        app = ray_serve.status().applications.get(app_name)
        status = last["status"] = str(app.status) if app else "NOT_STARTED"
        if status.endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            details = [app.message] + [f"{name}: {d.message}" for name, d in app.deployments.items() if d.message]
            raise RuntimeError(f"deploying {app_name} failed: " + " | ".join(m for m in details if m))
        return status.endswith("RUNNING")

    wait_until(running, timeout_s, interval_s=1.0,
               message=lambda: (f"{app_name} to run (last status {last['status']}); raise serve.ready_timeout_s or "
                                "check `serve status`"))


def endpoint_url(serve: ServeConfig) -> str:
    """The OpenAI base URL (".../v1") of an endpoint deployed with `serve`, as a local client sees it."""
    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::", "") else serve.host
    return f"http://{host}:{serve.port}{serve.route_prefix.rstrip('/')}/v1"


def check_health(base_url: str, api_key: str | None, *, timeout: float = 120.0) -> dict[str, Any]:
    """GET <root>/health of a rayloom endpoint: a real one-token generation. Raises unless it is healthy."""
    import httpx  # here: only the serve job's health check needs an HTTP client

    url = api_base(base_url).removesuffix("/v1") + "/health"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(url, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"endpoint health check {url} returned {response.status_code}: {response.text[:300]}")
    return response.json()


def run_serve_job(cfg: RayloomConfig) -> Endpoint:
    import ray  # here: Ray only when the job runs

    serve = cfg.serve
    auth = resolve_auth(serve.require_api_key, serve.api_key_env, serve.api_key_file)
    _check_gate(cfg)
    owns_ray = not ray.is_initialized() and is_embedded(cfg.cluster)
    if owns_ray and not serve.blocking:
        raise UserError("serve.blocking=false needs a Ray cluster that outlives this process, but cluster.address is "
                        "empty (the embedded Ray stops when `rayloom serve` exits). Start one with `ray start --head` "
                        "and set cluster.address=auto, or keep serve.blocking=true")
    config_path = write_serve_config(cfg)
    print(f"serve config (for `serve deploy` or a KubeRay RayService): {config_path}", flush=True)
    endpoint: Endpoint | None = None
    # SIGTERM (systemd, Kubernetes, `kill`) stops the server like Ctrl-C: drain, delete, shut down.
    with stop_on_sigterm():
        try:
            # ray.init installs Ray's own SIGTERM handler (exit at once): take SIGTERM back after it.
            with ray_session(cfg.cluster, cfg.storage), stop_on_sigterm():
                plan = plan_serving(cfg)
                endpoint = deploy(cfg, auth=auth, plan=plan)
                record_release(cfg, plan, endpoint.version, action="deploy")
                _announce(cfg, endpoint, plan)
                if serve.blocking:
                    _block_until_interrupted(serve, owns_ray=owns_ray)
        finally:
            if owns_ray:
                _stop_embedded_haproxy(endpoint)
    return endpoint


def announce(cfg: RayloomConfig, endpoint: Endpoint, plan: ServePlan) -> None:
    """Prove the endpoint generates (GET /health) and print where it is, what it serves, how to call it."""
    _announce(cfg, endpoint, plan)


def _announce(cfg: RayloomConfig, endpoint: Endpoint, plan: ServePlan) -> None:
    serve = cfg.serve
    keys = read_api_keys(serve.api_key_env, serve.api_key_file)
    health = check_health(endpoint.base_url, keys[0] if keys else None)
    print(f"endpoint: {endpoint.base_url}  models: {', '.join(endpoint.model_ids)}  version: {endpoint.version}",
          flush=True)
    if plan.lineage:
        print("  lineage (GET /v1/models/<id> -> metadata.rayloom_lineage):\n    "
              + "\n    <- ".join(describe(plan.lineage)), flush=True)
    print(f"  health: {health['status']} (one-token generation in {health['latency_ms']} ms); "
          f"API key: {'$' + serve.api_key_env if serve.require_api_key else 'not required'}", flush=True)
    if endpoint.haproxy_dir:
        print(f"  HAProxy config and admin socket: {endpoint.haproxy_dir} (private to this user)", flush=True)
    print(f"  try: rayloom chat --url {endpoint.base_url}", flush=True)


class ServerStopped(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C (a KeyboardInterrupt, so no traceback anywhere)."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ServerStopped in the main thread for the duration of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise ServerStopped()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _block_until_interrupted(serve: ServeConfig, *, owns_ray: bool) -> None:
    from ray import serve as ray_serve  # here: Ray only when deploying

    print("serving; press Ctrl-C (or send SIGTERM) to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # A second signal while draining must not cut the shutdown short with a traceback.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"\nstopping {serve.app_name}: draining in-flight requests", flush=True)
        ray_serve.delete(serve.app_name)  # waits for the replicas' graceful shutdown
        if owns_ray:
            ray_serve.shutdown()  # stops the HTTP ingress (HAProxy) before Ray goes
        print(f"stopped {serve.app_name}", flush=True)


def _stop_embedded_haproxy(endpoint: Endpoint | None) -> None:
    """After the embedded Ray is gone: stop any HAProxy of ours still running, remove its files."""
    if endpoint is None or not endpoint.haproxy_dir:
        return
    leftover = stop_leftover_haproxy(Path(endpoint.haproxy_dir))
    if leftover:
        log.warning("stopped %d HAProxy process(es) that outlived Ray: %s", len(leftover), leftover)
    shutil.rmtree(endpoint.haproxy_dir, ignore_errors=True)


def _check_gate(cfg: RayloomConfig) -> None:
    """serve.enforce_gate: refuse to deploy a model whose last evaluation failed eval.gate (GateFailed)."""
    if cfg.serve.enforce_gate:
        check_deploy_gate(cfg)
