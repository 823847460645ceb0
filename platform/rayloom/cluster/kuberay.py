"""KubeRay manifests rendered from the config tree: a RayJob for training and a RayService for serving.

Both reuse the RayCluster spec in cluster/kuberay/raycluster.yaml (autoscaler v2, token auth,
GPU worker groups), so there is one cluster definition. The RayJob runs the same
`jobs/<job>.py` entrypoint with the same overrides as `rayloom submit`; the RayService's
serveConfigV2 is the Serve config rendered from the `serve` group.

`render_serve_config` targets Ray's own OpenAI app builder (`ray.serve.llm:build_openai_app`);
when rayloom.serve publishes its Serve-config writer (the one `rayloom serve` writes, with
rayloom's API-key auth and limits), `SERVE_CONFIG_RENDERER` points there instead.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from rayloom import storage
from rayloom.cluster.job_spec import build_entrypoint, build_job_env_vars
from rayloom.config import RayloomConfig, repo_root
from rayloom.errors import UserError

RAYCLUSTER_YAML = "cluster/kuberay/raycluster.yaml"
SERVE_IMPORT_PATH = "ray.serve.llm:build_openai_app"
# "module:function(cfg) -> dict" producing the Serve config (see the module docstring).
SERVE_CONFIG_RENDERER = "rayloom.cluster.kuberay:render_serve_config"


def load_raycluster(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else repo_root() / RAYCLUSTER_YAML
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    clusters = [doc for doc in docs if doc.get("kind") == "RayCluster"]
    if len(clusters) != 1:
        raise UserError(f"{path} must hold exactly one RayCluster")
    return clusters[0]


def model_source(cfg: RayloomConfig) -> str:
    source = cfg.serve.model_path or cfg.model.path or ""
    if not source:
        raise UserError("a RayService loads its model from a path: set serve.model_path (or model.path) to an "
                        "s3:// prefix or hub id; presets are built locally and are not shipped to a cluster")
    return source


def build_llm_config(cfg: RayloomConfig) -> dict[str, Any]:
    """One `ray.serve.llm.LLMConfig` (as a dict) from the serve and model groups."""
    serve = cfg.serve
    source = model_source(cfg)
    engine_kwargs: dict[str, Any] = {
        "dtype": serve.dtype,
        "max_model_len": serve.max_model_len,
        "tensor_parallel_size": serve.tensor_parallel_size,
        "enable_prefix_caching": serve.enable_prefix_caching,
        "enforce_eager": serve.enforce_eager,
    }
    if serve.use_gpu:
        engine_kwargs["gpu_memory_utilization"] = serve.gpu_memory_utilization
    llm: dict[str, Any] = {
        "model_loading_config": {
            "model_id": serve.model_id or cfg.model.name,
            "model_source": {"bucket_uri": source} if storage.is_s3(source) else source,
        },
        "engine_kwargs": engine_kwargs,
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": serve.min_replicas,
                "max_replicas": serve.max_replicas,
                "target_ongoing_requests": serve.target_ongoing_requests,
            },
            "max_ongoing_requests": serve.max_ongoing_requests,
            "max_queued_requests": serve.max_queued_requests,
        },
    }
    if serve.use_gpu and serve.accelerator_type:
        llm["accelerator_type"] = serve.accelerator_type
    return llm


def render_serve_config(cfg: RayloomConfig) -> dict[str, Any]:
    """The Serve config file (`serve deploy` format) for the configured model."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cfg.serve.port},
        "applications": [{
            "name": cfg.serve.app_name,
            "route_prefix": cfg.serve.route_prefix,
            "import_path": SERVE_IMPORT_PATH,
            "args": {"llm_configs": [build_llm_config(cfg)]},
        }],
    }


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
    from rayloom.entry import resolve

    base = base or load_raycluster()
    serve_config = resolve(SERVE_CONFIG_RENDERER)(cfg)
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
    entrypoint = build_entrypoint(job, overrides, image_cluster)
    runtime_env = {"env_vars": build_job_env_vars(cfg.cluster, forward_local=False)}
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
    """{file name: manifest} for cluster/kuberay/."""
    base = load_raycluster()
    return {
        "rayjob-train.yaml": render_rayjob(train_cfg, "train", overrides, base),
        "rayservice.yaml": render_rayservice(serve_cfg, base),
    }
