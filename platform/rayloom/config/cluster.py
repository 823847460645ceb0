"""Cluster group: embedded local Ray, or a real cluster to connect to or submit jobs to."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import non_negative, one_of, require

# How `rayloom submit` gets the project's code onto the cluster.
JOB_PACKAGING = ("working_dir", "image")


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
    # Stream worker/actor output (engines, trainers) to this console. `rayloom run` turns it off so
    # the stage summaries stay readable; the logs remain under Ray's session directory.
    log_to_driver: bool = True
    namespace: str = "rayloom"
    # File holding the Ray auth token for a remote cluster (never the token itself).
    auth_token_path: str = ""
    # Environment variables copied by value into jobs (non-secret only) ...
    env: dict[str, str] = field(default_factory=dict)
    # ... and names of secrets the cluster side provides (IAM role, Kubernetes secret, a file on
    # the nodes). Only the names travel; a job checks they exist on the cluster.
    secret_env: list[str] = field(default_factory=list)
    # Extra pip packages for the job's runtime_env (a cluster whose image lacks them).
    pip: list[str] = field(default_factory=list)
    # The node image (cluster/Dockerfile): what the launcher YAML, KubeRay manifests and
    # job_packaging=image use.
    image: str = "rayloom/node:0.1.0"
    # working_dir: upload this project (minus working_dir_excludes) with each job; the nodes
    # provide the Python stack (the node image). image: run the job in `image` (Ray's image_uri
    # runtime_env, podman on the nodes) with the project baked in at image_workdir.
    job_packaging: str = "working_dir"
    # Where the project lives inside the node image (the Dockerfile's WORKDIR).
    image_workdir: str = "/app"
    # Interpreter that runs jobs/<job>.py on the cluster.
    python: str = "python"
    # Resources reserved for the job's driver (the entrypoint). 0 CPUs lets it run on a head
    # node that takes no workloads; the work itself asks for what it needs.
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0
    # Paths excluded from the working_dir shipped with `rayloom submit`: caches, outputs, and files
    # that hold credentials or local databases (.env, keys, MLflow's SQLite file).
    working_dir_excludes: list[str] = field(
        default_factory=lambda: [".venv", ".venv-tools", ".git", "runs", "outputs", "multirun", "**/__pycache__",
                                 ".pytest_cache", ".ruff_cache", "bench/results", "mlruns", "*.egg-info",
                                 "**/.terraform", "*.tfstate", "*.tfstate.*", ".env", ".env.*", "*.pem", "*.key",
                                 "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", "*.token", "mlflow.db", "*.db",
                                 ".netrc", ".git-credentials"]
    )

    def __post_init__(self) -> None:
        if self.num_cpus is not None:
            require(self.num_cpus >= 1, "cluster.num_cpus", "must be >= 1", self.num_cpus)
        if self.num_gpus is not None:
            non_negative(self.num_gpus, "cluster.num_gpus")
        for name in self.env:
            require(name not in self.secret_env, "cluster.env", f"{name} is also listed in cluster.secret_env",
                    name)
        for name in self.secret_env:
            require(bool(name) and name.replace("_", "").isalnum(), "cluster.secret_env[]",
                    "must be environment variable names (letters, digits, '_')", name)
        one_of(self.job_packaging, JOB_PACKAGING, "cluster.job_packaging")
        require(self.job_packaging != "image" or not self.pip, "cluster.pip",
                "cannot be combined with cluster.job_packaging=image (Ray's image_uri runtime_env takes only "
                "env_vars); bake the packages into cluster.image", self.pip)
        require(self.job_packaging != "image" or bool(self.image), "cluster.image",
                "must name an image when cluster.job_packaging=image", self.image)
        require(self.image_workdir.startswith("/"), "cluster.image_workdir", "must be an absolute path",
                self.image_workdir)
        require(bool(self.python), "cluster.python", "must not be empty", self.python)
        non_negative(self.entrypoint_num_cpus, "cluster.entrypoint_num_cpus")
        non_negative(self.entrypoint_num_gpus, "cluster.entrypoint_num_gpus")
