"""Releases of a served app: versions, the release record, status, promotion, rollback.

A release is one deploy of an app: its version (`release_version`: a hash of everything the
replicas are built from, shown in the model card as metadata.rayloom_version; Ray 2.60 has no
user-set deployment version, so Serve rolls on every deploy), the model it serves and that
model's lineage. `rayloom serve` onto an app that already
runs on the cluster is a rollout: Serve starts the new version's replicas (surge and step set
explicitly, rayloom.serve.app.build_deployment_config), routes to them once they pass their
health check, and drains the old ones. Each deploy appends to
<storage.root>/serve/<app_name>/releases.json, which `status` shows and `rollback` reads: rollback
deploys the previous release's recorded config again, as a rollout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from rayloom import storage
from rayloom.config import RayloomConfig, to_typed
from rayloom.errors import UserError

if TYPE_CHECKING:
    from rayloom.serve.auth import AuthSettings
    from rayloom.serve.deployment_plan import ServePlan

log = logging.getLogger(__name__)

_KEEP_RELEASES = 50
# Settings Serve applies to running replicas without replacing them: not part of the version.
_LIGHTWEIGHT = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s",
                "blocking", "ready_timeout_s", "config_out", "enforce_gate", "rollout_max_surge_percent",
                "rollout_step_percent", "drain_timeout_s")


def release_version(cfg: RayloomConfig, plan: ServePlan, auth: AuthSettings | None) -> str:
    """rayloom's version of this config: changes whenever the replicas would differ."""
    serve = {k: v for k, v in dataclasses.asdict(cfg.serve).items() if k not in _LIGHTWEIGHT}
    lineage = plan.lineage or {}
    material = {"serve": serve, "model": dataclasses.asdict(cfg.model), "source": plan.model_source,
                "lineage": lineage.get("id"), "adapters": plan.adapters,
                "keys": list(auth.key_digests) if auth is not None else None}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return f"v-{digest[:12]}"


def releases_uri(cfg: RayloomConfig) -> str:
    return storage.join(cfg.storage.root, "serve", cfg.serve.app_name, "releases.json")


def read_releases(cfg: RayloomConfig) -> list[dict[str, Any]]:
    uri = releases_uri(cfg)
    if not storage.exists(uri):
        return []
    return json.loads(storage.read_text(uri))


def record_release(cfg: RayloomConfig, plan: ServePlan, version: str, *, action: str) -> dict[str, Any]:
    """Append this deploy to the app's release record (unless it is the active release already)."""
    releases = read_releases(cfg)
    if releases and releases[-1]["version"] == version:
        return releases[-1]
    lineage = plan.lineage or {}
    release = {"version": version, "action": action, "deployed_at": time.time(), "model_id": plan.model_id,
               "model_source": plan.model_source, "lineage_id": lineage.get("id"),
               "adapters": sorted(plan.adapters),
               # What `rollback` deploys again: the serve and model groups (names of secrets only).
               "args": {"serve": dataclasses.asdict(cfg.serve), "model": dataclasses.asdict(cfg.model)}}
    releases = (releases + [release])[-_KEEP_RELEASES:]
    uri = releases_uri(cfg)
    if not storage.is_s3(uri):
        from pathlib import Path

        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(uri, json.dumps(releases, indent=1, default=str))
    return release


def previous_release(releases: list[dict[str, Any]]) -> dict[str, Any]:
    """The release before the active one (a different version), or a UserError naming what exists."""
    if not releases:
        raise UserError("no release recorded for this app yet (deploy it with `rayloom serve` first)")
    active = releases[-1]["version"]
    for release in reversed(releases[:-1]):
        if release["version"] != active:
            return release
    raise UserError(f"nothing to roll back to: the only recorded version is {active}")


def config_of(release: dict[str, Any], cfg: RayloomConfig) -> RayloomConfig:
    """`cfg` (cluster, storage, eval) with the serve and model groups a release was deployed with."""
    recorded = config_from_args(release["args"])
    # Keep this invocation's deploy mode and timeouts: they are how to deploy, not what.
    serve = dataclasses.replace(recorded.serve, blocking=cfg.serve.blocking, ready_timeout_s=cfg.serve.ready_timeout_s,
                                config_out=cfg.serve.config_out)
    return dataclasses.replace(cfg, serve=serve, model=recorded.model)


def config_from_args(args: dict[str, Any]) -> RayloomConfig:
    """A typed, validated RayloomConfig from a Serve config's `args` (serve and model groups)."""
    unknown = set(args) - {"serve", "model"}
    if unknown:
        raise UserError(f"serve config args: unknown keys {sorted(unknown)} (expected serve, model)")
    base = OmegaConf.structured(RayloomConfig)
    try:
        merged = OmegaConf.merge(base, {k: v for k, v in args.items() if v is not None})
    except Exception as exc:
        raise UserError(f"serve config args: {_first_line(exc)}") from None
    return to_typed(merged)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[:3]) if text else type(exc).__name__


def app_status(app_name: str) -> dict[str, Any]:
    """Serve's view of the app on the connected cluster: status, and per deployment its replicas."""
    from ray import serve as ray_serve  # here: Ray only when asked

    app = ray_serve.status().applications.get(app_name)
    if app is None:
        return {"status": "NOT_RUNNING", "deployments": {}}
    return {"status": str(app.status).rsplit(".", 1)[-1], "message": app.message,
            "last_deployed_time_s": app.last_deployed_time_s,
            "deployments": {name: {"status": str(d.status).rsplit(".", 1)[-1], "message": d.message,
                                   "replicas": {str(k).rsplit(".", 1)[-1]: v for k, v in d.replica_states.items()}}
                            for name, d in app.deployments.items()}}


def format_status(app_name: str, live: dict[str, Any], releases: list[dict[str, Any]]) -> str:
    lines = [f"app {app_name}: {live['status']}" + (f" ({live['message']})" if live.get("message") else "")]
    for name, d in live["deployments"].items():
        replicas = ", ".join(f"{n} {state.lower()}" for state, n in sorted(d["replicas"].items())) or "no replicas"
        lines.append(f"  deployment {name}: {d['status'].lower()}; replicas: {replicas}")
    if not releases:
        lines.append("  no release recorded")
    for label, release in zip(("active", "previous"), _distinct_recent(releases), strict=False):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(release["deployed_at"]))
        lines.append(f"  {label}: {release['version']}  model {release['model_id']} from {release['model_source']}"
                     f"  lineage {release.get('lineage_id') or '-'}  ({release['action']} at {when} UTC)")
    return "\n".join(lines)


def _distinct_recent(releases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for release in reversed(releases):
        if all(release["version"] != s["version"] for s in seen):
            seen.append(release)
    return seen
