"""What `rayloom submit` sends: the entrypoint, the runtime_env and the job's own overrides.

A submitted job runs `jobs/<job>.py` (the thin Hydra entrypoint) on the cluster with the same
overrides the user typed, so the cluster composes the same config. Settings that only describe
how to *reach* the cluster (its address, the local token file) are replaced on the job's side:
inside a Ray job, rayloom joins the job's own cluster and Ray hands the driver its credentials.
Nothing here carries a secret by value: the overrides and env vars pass rayloom.secret_policy first
(they end up in the entrypoint, the job's metadata and the cluster's .hydra/overrides.yaml).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rayloom import secret_policy
from rayloom.config import ClusterConfig
from rayloom.runtime import SECRET_ENV, build_env_vars

# Only meaningful on the submitting machine; never forwarded into a job on another machine.
_SUBMITTER_ONLY_KEYS = ("cluster.address", "cluster.auth_token_path")
# Local paths of the submitting machine: forwarded only when listed in cluster.env explicitly.
_LOCAL_PATH_ENV = ("RAYLOOM_CACHE_DIR", "RAYLOOM_CONF_DIR")


@dataclass(frozen=True)
class JobSpec:
    job: str
    entrypoint: str
    runtime_env: dict
    submission_id: str
    metadata: dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0


override_key = secret_policy.override_key  # `+cluster.address=x` -> `cluster.address`


def job_side_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides the job composes on the cluster: the user's, minus submitter-only keys, with
    the cluster address emptied (join the job's own cluster) and no local token file."""
    kept = [o for o in overrides if override_key(o) not in _SUBMITTER_ONLY_KEYS]
    return [*kept, "cluster.address=''", "cluster.auth_token_path=''"]


def build_job_env_vars(cluster: ClusterConfig, forward_local: bool = True,
                       secret_names: Iterable[str] = ()) -> dict[str, str]:
    """Non-secret env vars for a job: cluster.env, plus (forward_local) the submitting shell's
    forwarded settings such as AWS_ENDPOINT_URL. Manifests rendered into files use cluster.env only,
    so they do not depend on the shell that rendered them."""
    env = build_env_vars(cluster, secret_names)  # refuses secrets by name and value
    if not forward_local:
        env = {name: value for name, value in env.items() if name in cluster.env}
    for name in _LOCAL_PATH_ENV:
        if name not in cluster.env:
            env.pop(name, None)
    # Inside the job, rayloom's ray.init passes the same non-secret env_vars again; Ray refuses to
    # merge a job's and a driver's runtime_env that share keys unless told to (values are equal).
    env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    return env


def build_job_runtime_env(cluster: ClusterConfig, project_root: Path, secret_names: Iterable[str] = ()) -> dict:
    """working_dir: the project (minus caches, venvs, outputs, key files) plus the rayloom package as
    a py_module, so the cluster runs exactly this checkout's code; image: Ray's image_uri."""
    env_vars = build_job_env_vars(cluster, secret_names=secret_names)
    if cluster.job_packaging == "image":
        return {"image_uri": cluster.image, "env_vars": env_vars}
    runtime_env: dict = {
        "working_dir": str(project_root),
        "py_modules": [str(project_root / "platform" / "rayloom")],
        "excludes": list(cluster.working_dir_excludes),
        "env_vars": env_vars,
    }
    if cluster.pip:
        runtime_env["pip"] = list(cluster.pip)
    return runtime_env


def build_entrypoint(job: str, overrides: list[str] | tuple[str, ...], cluster: ClusterConfig,
                     secret_names: Iterable[str] = ()) -> str:
    """The job's command line. Refuses overrides that carry a credential (by key or by value)."""
    secret_policy.check_overrides(overrides, "override", secret_names={*SECRET_ENV, *cluster.secret_env,
                                                                        *secret_names})
    root = cluster.image_workdir if cluster.job_packaging == "image" else "."
    script = f"{root}/jobs/{job}.py"
    command = " ".join([shlex.quote(cluster.python), shlex.quote(script),
                        *(shlex.quote(o) for o in job_side_overrides(overrides))])
    if cluster.job_packaging == "working_dir":
        # rayloom arrives as a py_module (its own folder), so it cannot find conf/ beside itself;
        # the job's working_dir (the driver's cwd) holds it. Expanded by the job's shell.
        command = f'RAYLOOM_CONF_DIR="$PWD/conf" {command}'
    if cluster.secret_env:
        # Secrets travel by reference: the job only checks that the cluster provides them.
        check = " ".join([shlex.quote(cluster.python), "-m", "rayloom.cluster.job_env",
                          *(shlex.quote(name) for name in cluster.secret_env)])
        command = f"{check} && {command}"
    return command


def new_submission_id(job: str) -> str:
    return f"rayloom-{job}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def build_job_spec(job: str, overrides: list[str] | tuple[str, ...], cluster: ClusterConfig, project_root: Path,
                   submission_id: str = "", secret_names: Iterable[str] = ()) -> JobSpec:
    """What is submitted. `secret_names`: variables the config says hold secrets (the configured
    serve.api_key_env and eval api_key_env names: secret_policy.configured_secret_names(cfg))."""
    return JobSpec(
        job=job,
        entrypoint=build_entrypoint(job, overrides, cluster, secret_names),
        runtime_env=build_job_runtime_env(cluster, project_root, secret_names),
        submission_id=submission_id or new_submission_id(job),
        metadata={"rayloom_job": job, "rayloom_overrides": json.dumps(list(overrides))},
        entrypoint_num_cpus=cluster.entrypoint_num_cpus,
        entrypoint_num_gpus=cluster.entrypoint_num_gpus,
    )
