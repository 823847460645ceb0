"""Connect to the configured Ray cluster or start the embedded local one.

`cluster.address` decides: empty -> an embedded local Ray sized for this machine (or, inside a
Ray job, the cluster that runs it: Ray sets RAY_ADDRESS there); anything else -> connect.
This is the one place that handles Ray's token authentication and builds the runtime_env.
Importing this module does not import or start Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rayloom import secret_policy
from rayloom.config import ClusterConfig, StorageConfig
from rayloom.errors import UserError

log = logging.getLogger(__name__)

# Environment variables of this shell that workers need and that are safe to copy by value: an
# allow-list; anything else reaches a job only through cluster.env, which rayloom.secret_policy checks.
_FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                  "RAYLOOM_CACHE_DIR", "RAYLOOM_CONF_DIR", "HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE")
# Never forwarded by value, whatever the config says (rayloom.secret_policy also refuses any other
# credential-looking name or value): they travel by reference (IAM role, Kubernetes secret, a file
# on the cluster) and the cluster side must provide them.
SECRET_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN",
                        "RAYLOOM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "WANDB_API_KEY",
                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "GITHUB_TOKEN"})
# Where Ray keeps (and `rayloom cluster up` creates) the token when nothing else names one.
DEFAULT_TOKEN_PATH = "~/.ray/auth_token"


def default_num_cpus() -> int:
    """Logical CPUs for the embedded Ray: 2x the cores, at least 4.

    Ray Serve's ingress replica and each vLLM engine replica need a CPU each, and Ray Train's
    trainer controller needs one beside its workers; on a 2-core machine physical cores alone
    cannot place them. Work is still bounded by the real cores; the logical count only lets
    the pieces be scheduled.
    """
    return max(4, 2 * (os.cpu_count() or 1))


def apply_storage_env(storage: StorageConfig) -> None:
    """Make storage settings visible to boto3, pyarrow and (through the environment) Ray workers."""
    if storage.s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = storage.s3_endpoint_url
    if storage.region:
        os.environ["AWS_REGION"] = storage.region


def build_env_vars(cluster: ClusterConfig, secret_names: Iterable[str] = ()) -> dict[str, str]:
    """Env vars that travel with jobs and workers: the allow-listed ones of this shell, then
    cluster.env. Credentials are refused by name (SECRET_ENV, any KEY/TOKEN/PASSWORD-like name,
    `secret_names` such as the configured serve.api_key_env, cluster.secret_env) and by value."""
    env = {name: os.environ[name] for name in _FORWARDED_ENV if os.environ.get(name)}
    # A forwarded value with credentials in it (http://user:pw@minio) stays here, with a warning.
    for name in list(env):
        if secret_policy.secret_value_kind(env[name]):
            log.warning("not forwarding %s to Ray workers: its value holds a credential (%s)", name,
                        secret_policy.HOW_TO_PASS)
            del env[name]
    secret_policy.check_env(cluster.env, "cluster.env", {*SECRET_ENV, *cluster.secret_env, *secret_names})
    env.update({name: str(value) for name, value in cluster.env.items()})
    return env


def build_runtime_env(cluster: ClusterConfig, working_dir: str | os.PathLike | None = None) -> dict:
    """The runtime_env for jobs and remote drivers: non-secret env vars, optional pip, working_dir."""
    runtime_env: dict = {"env_vars": build_env_vars(cluster)}
    if cluster.pip:
        runtime_env["pip"] = list(cluster.pip)
    if working_dir is not None:
        runtime_env["working_dir"] = str(working_dir)
        runtime_env["excludes"] = list(cluster.working_dir_excludes)
    return runtime_env


def configure_auth(cluster: ClusterConfig) -> None:
    """Point Ray at the auth token for a remote cluster, by path. The token is never read into logs."""
    if cluster.auth_token_path:
        path = Path(cluster.auth_token_path).expanduser()
        if not path.is_file():
            raise UserError(f"cluster.auth_token_path={cluster.auth_token_path!r} does not exist")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def read_auth_token(token_path: str | os.PathLike = "") -> str:
    """The Ray auth token: rayloom's one reader of it (the token is sent, never logged or printed).

    From `token_path` when one is given (cluster.auth_token_path, a local head's token file): it
    must exist and hold a token. Otherwise from Ray's own sources, in Ray's order: RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token; "" when none has one.
    """
    if token_path:
        path = Path(token_path).expanduser()
        if not path.is_file():
            raise UserError(f"cluster.auth_token_path={str(token_path)!r} does not exist")
        token = path.read_text().strip()
        if not token:
            raise UserError(f"cluster.auth_token_path={str(token_path)!r} is empty")
        return token
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", DEFAULT_TOKEN_PATH)).expanduser()
    return path.read_text().strip() if path.is_file() else ""


def auth_headers(token_path: str | os.PathLike = "") -> dict[str, str]:
    """Authorization header for Ray's HTTP APIs (dashboard, jobs, state); empty without a token."""
    token = read_auth_token(token_path)
    return {"Authorization": f"Bearer {token}"} if token else {}


def init_ray(cluster: ClusterConfig, storage: StorageConfig | None = None) -> bool:
    """Start or connect to Ray. Returns True when this call started it (and should shut it down)."""
    import ray

    if storage is not None:
        apply_storage_env(storage)
    address = cluster.address or os.environ.get("RAY_ADDRESS", "")
    # Checked before the is_initialized shortcut so the mistake is reported the same way whatever ran before.
    if address.startswith(("http://", "https://")):
        raise UserError(f"cluster.address={address!r} is a dashboard (job API) address: use `rayloom submit` to run "
                        "jobs there, or give the cluster address (host:6379, ray://host:10001, auto)")
    if ray.is_initialized():
        return False
    configure_auth(cluster)
    common = {"namespace": cluster.namespace, "logging_level": logging.WARNING, "log_to_driver": cluster.log_to_driver}
    # Inside a Ray job the job's own runtime_env (set by `rayloom submit`) already applies; passing
    # another one from the driver makes Ray refuse to merge the two.
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        common["runtime_env"] = build_runtime_env(cluster)
    if address:
        log.info("connecting to Ray at %s", address)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as exc:
            raise UserError(f"could not connect to Ray at cluster.address={address!r}: {exc}") from None
        return True
    num_cpus = cluster.num_cpus or default_num_cpus()
    log.info("starting an embedded local Ray with %d logical CPUs", num_cpus)
    if "runtime_env" in common:
        if not cluster.include_dashboard:
            # Without the dashboard there is no state API; rayloom.ray_worker_setup says what that breaks.
            common["runtime_env"]["worker_process_setup_hook"] = EMBEDDED_WORKER_SETUP
        # The embedded cluster is one node, the driver's own: none of its nodes can be drained while
        # a run goes on, so Ray Train's preemption watcher (one more actor beside every run, each
        # idle Ray process costing the workers 0.6-0.7% on 2 cores: bench/ray_floor.py) would
        # watch for nothing. Off unless cluster.env or this shell sets it (Ray Train forwards the
        # shell's value to its controller, over this default).
        common["runtime_env"]["env_vars"].setdefault(PREEMPTION_WATCHER_ENV, "0")
    # address="local": a new instance always. With no address Ray joins whatever cluster
    # /tmp/ray/ray_current_cluster names (any `ray start`, or another process's Ray on this machine)
    # and then refuses num_cpus: an embedded run must not depend on what else runs here.
    with _loopback_node():
        ray.init(address="local", num_cpus=num_cpus, num_gpus=cluster.num_gpus, include_dashboard=cluster.include_dashboard,
                 _node_ip_address=LOOPBACK, **common)
    return True


LOOPBACK = "127.0.0.1"
# Ray imports it in every worker process of an embedded cluster without a dashboard.
EMBEDDED_WORKER_SETUP = "rayloom.ray_worker_setup.embedded_cluster"
# Ray Train's switch for its per-run drain watcher (ray.train.v2._internal.constants, Ray 2.60).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@contextmanager
def _loopback_node() -> Iterator[None]:
    """The embedded Ray serves this machine only, and runs without token auth on its gRPC ports:
    its GCS, raylet and workers listen on 127.0.0.1, not on every interface. Ray binds its gRPC
    servers to loopback when the node IP is 127.0.0.1, but ray.init turns a 127.0.0.1
    `_node_ip_address` back into the machine's address unless multi-node clusters are off (Ray's
    own default on macOS and Windows, `ray_constants.ENABLE_RAY_CLUSTER`). It is off only while
    this call starts the node; Serve's HTTP/HAProxy ingress still binds serve.host. Checked on Ray
    2.60: GCS, raylet, workers, actors, dashboard agent and runtime-env agent all listen on
    127.0.0.1 (before: 0.0.0.0 / the node IP), and `rayloom serve` through HAProxy still answers."""
    from ray._private import ray_constants  # Ray's switch has no public API (checked on Ray 2.60)

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


@contextmanager
def ray_session(cluster: ClusterConfig, storage: StorageConfig | None = None) -> Iterator[None]:
    """Ray for the duration of a block; shuts down only what this block started."""
    import ray

    started = init_ray(cluster, storage)
    try:
        yield
    finally:
        if started:
            # Shutting down an embedded Ray also ends Serve apps and actors it held.
            ray.shutdown()
