"""KubeRay manifests rendered from the config tree: a RayJob for training and a RayService for serving.

Both reuse the RayCluster spec in cluster/kuberay/raycluster.yaml (autoscaler v2, token auth,
GPU worker groups), so there is one cluster definition. The RayJob runs the same
`jobs/<job>.py` entrypoint with the same overrides as `rayloom submit`; the RayService's
serveConfigV2 is the Serve config `rayloom serve` writes (rayloom.serve.serve_config: the same app,
with rayloom's API-key auth and request limits) in its portable form: no environment from the
machine that rendered it, a model on S3 or the hub. Secrets are never rendered: both configs and
the overrides pass rayloom.secret_policy first; the manifests name secrets by secretKeyRef.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from rayloom import secret_policy
from rayloom.cluster.job_spec import build_entrypoint, build_job_env_vars
from rayloom.config import RayloomConfig, repo_root
from rayloom.errors import UserError

RAYCLUSTER_YAML = "cluster/kuberay/raycluster.yaml"


def load_raycluster(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else repo_root() / RAYCLUSTER_YAML
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    clusters = [doc for doc in docs if doc.get("kind") == "RayCluster"]
    if len(clusters) != 1:
        raise UserError(f"{path} must hold exactly one RayCluster")
    return clusters[0]


def _worker_groups(spec: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    """Worker groups labelled for a pool (serve / train) in the shared RayCluster."""
    groups = [g for g in spec["workerGroupSpecs"]
              if g["template"].get("metadata", {}).get("labels", {}).get("rayloom.io/pool") == pool]
    if not groups:
        raise UserError(f"{RAYCLUSTER_YAML} has no worker group labelled rayloom.io/pool: {pool}")
    return groups


def _cluster_spec(base: dict[str, Any], pool: str) -> dict[str, Any]:
    spec = copy.deepcopy(base["spec"])
    spec["workerGroupSpecs"] = copy.deepcopy(_worker_groups(spec, pool))
    return spec


def _metadata(base: dict[str, Any], name: str) -> dict[str, Any]:
    labels = dict(base["metadata"].get("labels", {}))
    return {"name": name, "labels": labels}


def render_rayservice(cfg: RayloomConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    from rayloom.serve.serve_config import render_serve_config

    base = base or load_raycluster()
    secret_policy.check_config(cfg, "rayloom cluster render kuberay (serve)")
    serve_config = render_serve_config(cfg, for_cluster=True)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(base, f"{base['metadata']['name']}-serve"),
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": _cluster_spec(base, "serve"),
        },
    }


def render_rayjob(cfg: RayloomConfig, job: str, overrides: list[str],
                  base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A RayJob running jobs/<job>.py from the node image, on a cluster created for it."""
    base = base or load_raycluster()
    # The node image carries the project (cluster/Dockerfile), so nothing is uploaded.
    image_cluster = dataclasses.replace(cfg.cluster, job_packaging="image", pip=[])
    secret_names = secret_policy.configured_secret_names(cfg)
    entrypoint = build_entrypoint(job, overrides, image_cluster, secret_names)
    runtime_env = {"env_vars": build_job_env_vars(cfg.cluster, forward_local=False, secret_names=secret_names)}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(base, f"{base['metadata']['name']}-{job}"),
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
            # The cluster exists for this job only: GPU nodes go away when it ends.
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "backoffLimit": 0,
            "rayClusterSpec": _cluster_spec(base, "train"),
        },
    }


def render_kuberay(serve_cfg: RayloomConfig, train_cfg: RayloomConfig, overrides: list[str]) -> dict[str, dict]:
    """{file name: manifest} for cluster/kuberay/. Refuses any secret by value before rendering."""
    secret_policy.check_config(train_cfg, "rayloom cluster render kuberay (train)")
    secret_policy.check_overrides(overrides, "override",
                                  secret_names=secret_policy.configured_secret_names(serve_cfg)
                                  | secret_policy.configured_secret_names(train_cfg))
    base = load_raycluster()
    return {
        "rayjob-train.yaml": render_rayjob(train_cfg, "train", overrides, base),
        "rayservice.yaml": render_rayservice(serve_cfg, base),
    }
