"""The Serve config file equivalent to `rayloom serve`: for `serve deploy` or a KubeRay RayService.

`render_serve_config(cfg)` returns the dict (Ray Serve's ServeDeploySchema: http_options +
applications); a RayService takes the same document as `spec.serveConfigV2` (a YAML string, see
`render_serve_config_yaml`). The application is `rayloom.serve.app:app_builder` with the typed
serve and model groups as `args`, so the cluster builds exactly what `build_app(cfg)` builds here.
No secrets are written: API keys stay in the variable / file the config names, which the cluster
provides (a Kubernetes secret mounted as env or file).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.runtime import build_env_vars
from rayloom.secret_policy import check_config
from rayloom.serve.app import controller_env_vars
from rayloom.serve.deployment_plan import _looks_like_hub_id
from rayloom.serve.haproxy_guard import launcher_settings

APP_BUILDER = "rayloom.serve.app:app_builder"
# rayloom's HAProxy launcher in the cluster image (cluster/Dockerfile: rayloom installed into the
# /opt/venv virtual environment, which puts its console scripts in /opt/venv/bin).
IMAGE_HAPROXY_LAUNCHER = "/opt/venv/bin/rayloom-haproxy"

log = logging.getLogger(__name__)


def _serve_args(cfg: RayloomConfig) -> dict[str, Any]:
    return {"serve": dataclasses.asdict(cfg.serve), "model": dataclasses.asdict(cfg.model)}


def render_serve_config(cfg: RayloomConfig, *, for_cluster: bool = False) -> dict[str, Any]:
    """The Serve config dict. `for_cluster=True` renders a portable document (a KubeRay RayService):
    nothing from this machine's environment, a model every node can read, and HTTP on all interfaces
    of the pod (the Kubernetes Service, not the pod, decides what is exposed)."""
    serve = cfg.serve
    # What this file carries travels to the cluster (serve deploy, a RayService): secrets never by value.
    check_config(cfg, where="the Serve config")
    if for_cluster:
        _check_cluster_visible_model(cfg)
    application: dict[str, Any] = {
        "name": serve.app_name,
        "route_prefix": serve.route_prefix,
        "import_path": APP_BUILDER,
        "args": _serve_args(cfg),
    }
    # Non-secret only (secrets raise in build_env_vars). A cluster document takes only the values the
    # config names (cluster.env), never variables forwarded from the machine that rendered it.
    env_vars = dict(cfg.cluster.env) if for_cluster else build_env_vars(cfg.cluster)
    if for_cluster:
        build_env_vars(dataclasses.replace(cfg.cluster, env=env_vars))  # the same secret check
    if env_vars:
        application["runtime_env"] = {"env_vars": env_vars}
    document: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0" if for_cluster else serve.host, "port": serve.port},
    }
    controller_env = {**controller_env_vars(serve), **_haproxy_launcher_env(cfg, for_cluster=for_cluster)}
    if controller_env:
        # The controller passes its environment on to the HTTP proxies (rayloom.serve.app).
        document["controller_options"] = {"runtime_env": {"env_vars": controller_env}}
    document["applications"] = [application]
    return document


def _check_cluster_visible_model(cfg: RayloomConfig) -> None:
    source = cfg.serve.model_path or cfg.model.path
    # A preset without serve.model_path is rebuilt from its config on the node (nothing to ship).
    portable = bool(source) and (storage.is_s3(source) or _looks_like_hub_id(source))
    if (cfg.serve.model_path or cfg.model.preset is None) and not portable:
        raise UserError(f"a cluster loads the served model from a path every node can read: serve.model_path "
                        f"(or model.path) {source!r} must be an s3:// prefix or a hub id")
    for adapter in cfg.serve.lora_adapters:
        if not storage.is_s3(adapter.path):
            raise UserError(f"serve.lora_adapters[{adapter.name}].path={adapter.path!r}: a cluster reads adapters "
                            "from s3://")


def local_haproxy_launcher() -> str | None:
    """The `rayloom-haproxy` command of this installation (next to this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "rayloom-haproxy"
    return str(beside) if beside.is_file() else shutil.which("rayloom-haproxy")


def _haproxy_launcher_env(cfg: RayloomConfig, *, for_cluster: bool) -> dict[str, str]:
    """HAProxy through rayloom's launcher (rayloom.serve.haproxy_guard) when `serve deploy` runs this
    file: the config hardened as `rayloom serve` hardens it, and HAProxy stopped with the Serve
    controller that started it (a reloaded one outlived `ray stop --force` otherwise)."""
    serve = cfg.serve
    if serve.http_ingress != "haproxy":
        return {}
    launcher = IMAGE_HAPROXY_LAUNCHER if for_cluster else local_haproxy_launcher()
    if launcher is None:
        log.warning("rayloom-haproxy is not installed (pip install -e .): the Serve config runs Ray's stock HAProxy")
        return {}
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": launcher,
            **launcher_settings(bind_host="0.0.0.0" if for_cluster else serve.host,
                                status_pages=serve.haproxy_status_pages,
                                http_request_timeout_s=serve.http_request_timeout_s)}


def render_serve_config_yaml(cfg: RayloomConfig) -> str:
    header = ("# Ray Serve config written by `rayloom serve` (rayloom.serve.serve_config).\n"
              "# Deploy with `serve deploy <this file>` or use it as a RayService's spec.serveConfigV2.\n"
              f"# API keys: provide ${cfg.serve.api_key_env or '<serve.api_key_env>'}"
              + (f" or the file {cfg.serve.api_key_file}" if cfg.serve.api_key_file else "")
              + " on the cluster; they are never written here.\n")
    return header + yaml.safe_dump(render_serve_config(cfg), sort_keys=False)


def _default_config_path(cfg: RayloomConfig) -> str:
    return cfg.serve.config_out or storage.join(cfg.storage.root, "serve", cfg.serve.app_name, "serve_config.yaml")


def write_serve_config(cfg: RayloomConfig, path: str | Path | None = None) -> str:
    target = str(path) if path is not None else _default_config_path(cfg)
    if not storage.is_s3(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(target, render_serve_config_yaml(cfg))
    return target
