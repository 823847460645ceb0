"""Cluster group: embedded local Ray or a real cluster address."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import non_negative, require


@dataclass
class ClusterConfig:
    # Empty -> start an embedded local Ray. Otherwise "auto", "host:6379", "ray://host:10001"
    # (connect) or an http://host:8265 dashboard address (job submission).
    address: str = ""
    # Logical CPUs for the embedded Ray; null -> sized for this machine (at least 4, so a Serve
    # ingress replica fits beside an engine replica on a 2-core machine).
    num_cpus: int | None = None
    num_gpus: int | None = None
    include_dashboard: bool = False
    namespace: str = "rayloom"
    # File holding the Ray auth token for a remote cluster (never the token itself).
    auth_token_path: str = ""
    # Environment variable NAMES forwarded to jobs; values are read on the cluster side
    # when listed in secret_env (by reference), or copied when in env (non-secret).
    env: dict[str, str] = field(default_factory=dict)
    secret_env: list[str] = field(default_factory=list)
    # Extra pip packages for the job's runtime_env (a cluster whose image lacks them).
    pip: list[str] = field(default_factory=list)
    # Container image for jobs on a cluster (informational for KubeRay/launcher renders).
    image: str = "rayloom/node:latest"
    # Paths excluded from the working_dir shipped with `rayloom submit`.
    working_dir_excludes: list[str] = field(
        default_factory=lambda: [".venv", ".git", "runs", "outputs", "multirun", "**/__pycache__",
                                 ".pytest_cache", ".ruff_cache", "bench/results", "mlruns"]
    )

    def __post_init__(self) -> None:
        if self.num_cpus is not None:
            require(self.num_cpus >= 1, "cluster.num_cpus", "must be >= 1", self.num_cpus)
        if self.num_gpus is not None:
            non_negative(self.num_gpus, "cluster.num_gpus")
        for name in self.env:
            require(name not in self.secret_env, "cluster.env", f"{name} is also listed in cluster.secret_env",
                    name)
