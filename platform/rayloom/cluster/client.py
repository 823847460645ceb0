"""Reach a cluster's job API: resolve its address, authenticate, turn failures into user errors.

Ray 2.60 puts token authentication on the dashboard's HTTP API. `JobSubmissionClient` adds the
header itself only when this process runs with RAY_AUTH_MODE=token, so rayloom always passes
the header explicitly (rayloom.runtime.auth_headers: cluster.auth_token_path, else Ray's own sources).
The token is read, sent, and never printed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlsplit

from rayloom.config import ClusterConfig
from rayloom.errors import UserError
from rayloom.runtime import auth_headers

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_job_address(cluster: ClusterConfig, override: str = "") -> str:
    """The dashboard (job API) address: --address, cluster.address, then RAY_ADDRESS."""
    address = (override or cluster.address or os.environ.get("RAY_ADDRESS", "")).strip().rstrip("/")
    if not address:
        raise UserError("no cluster to talk to: set cluster.address=http://<head>:8265 (or cluster=remote with "
                        "RAY_ADDRESS), or start a local one with `rayloom cluster up`")
    if not address.startswith(("http://", "https://")):
        raise UserError(f"cluster.address={address!r} is not a job API address: job submission talks to the head's "
                        "dashboard port, e.g. http://<head>:8265 (a tunnel: `ray dashboard cluster/aws-gpu.yaml`, "
                        "`kubectl port-forward svc/<cluster>-head-svc 8265`)")
    return address


def connect_job_client(cluster: ClusterConfig, address: str):
    """A `JobSubmissionClient` for `address`; unreachable or unauthorized clusters are user errors."""
    # Ray's job client loads Ray (about a second): only commands that talk to a cluster pay for it.
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    headers = auth_headers(cluster.auth_token_path)
    parts = urlsplit(address)
    if headers and parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        log.warning("sending the Ray token in clear text to %s: use https, or a tunnel to 127.0.0.1 (`ray dashboard`, "
                    "`kubectl port-forward`)", parts.hostname)
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as exc:
        hint = ("the token was rejected: check cluster.auth_token_path" if headers else
                "no token was sent: set cluster.auth_token_path (or RAY_AUTH_TOKEN_PATH)")
        raise UserError(f"the cluster at {address} requires Ray token authentication; {hint}. "
                        f"({str(exc).splitlines()[0]})") from None
    except ConnectionError as exc:
        raise UserError(f"could not reach the Ray job API at {address}: {exc}") from None


def raise_job_api_error(exc: Exception, address: str) -> None:
    """Re-raise errors of job API calls (unknown job id, lost connection) as user errors."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise UserError(f"the job API at {address} refused the request: {text}") from None
