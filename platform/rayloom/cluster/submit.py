"""`rayloom submit <job> [overrides]` and `rayloom jobs list|status|logs|stop`: what they do.

Submission composes the job's config locally first, so a bad override fails here (exit 2) before
anything is uploaded; then it sends jobs/<job>.py with the same overrides to the cluster's job API
(Ray's `JobSubmissionClient`), follows the logs and returns the job's own exit status. The `jobs`
actions are thin calls of the same client, with rayloom's address and token resolution. Their
command-line parsing is in rayloom.cluster.commands.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rayloom import secret_policy
from rayloom.cluster.client import connect_job_client, raise_job_api_error, resolve_job_address
from rayloom.cluster.job_spec import JobSpec, build_job_spec, override_key
from rayloom.config import RayloomConfig, compose, repo_root
from rayloom.errors import UserError
from rayloom.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def compose_for_cluster(job: str, overrides: list[str]) -> RayloomConfig:
    """Compose with the `remote` cluster preset unless the user picked a cluster group."""
    picks_cluster = any(override_key(o) == "cluster" or o.lstrip("+").startswith("cluster@") for o in overrides)
    return compose(job, overrides if picks_cluster else ["cluster=remote", *overrides])


def project_root() -> Path:
    root = repo_root()
    if not (root / "jobs").is_dir() or not (root / "conf" / "base.yaml").is_file():
        raise UserError(f"rayloom submit ships this project's jobs/ and conf/, but {root} is not a rayloom checkout "
                        "(run it from a clone, or set cluster.job_packaging=image)")
    return root


def job_status_text(info) -> str:
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    return status


def job_exit_code(info) -> int:
    """0 for SUCCEEDED; the driver's exit code for FAILED (1 when Ray has none); 1 for STOPPED."""
    status = job_status_text(info)
    if status == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if status == "FAILED" and isinstance(code, int) and code != 0 else 1


def wait_for_terminal(client, job_id: str, poll_s: float = 1.0, timeout_s: float = math.inf):
    """The job's info once it has ended, or as it stands when `timeout_s` runs out."""
    try:
        return wait_until(lambda: _terminal_info(client, job_id), timeout_s, interval_s=poll_s,
                          message=f"job {job_id} to end")
    except WaitTimeout:
        return client.get_job_info(job_id)


def _terminal_info(client, job_id: str):
    info = client.get_job_info(job_id)
    return info if job_status_text(info) in TERMINAL else None


def follow_logs(client, job_id: str, out=None) -> None:
    """Stream the job's stdout/stderr until it ends (the job API's websocket tail)."""
    out = out or sys.stdout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(_tail())
    except RuntimeError as exc:  # the tail closed early (head restarted, network): fall back to polling
        log.warning("log stream ended early (%s); waiting for the job to finish", exc)
        wait_for_terminal(client, job_id)
        out.write(client.get_job_logs(job_id))
        out.flush()


def submit_job(client, spec: JobSpec) -> str:
    return client.submit_job(
        entrypoint=spec.entrypoint,
        runtime_env=spec.runtime_env,
        submission_id=spec.submission_id,
        metadata=spec.metadata,
        entrypoint_num_cpus=spec.entrypoint_num_cpus or None,
        entrypoint_num_gpus=spec.entrypoint_num_gpus or None,
    )


def prepare_job(job: str, overrides: list[str], submission_id: str = "") -> tuple[RayloomConfig, JobSpec]:
    """Compose the job here and build what would be sent, without contacting any cluster: a bad
    override or a secret by value fails here (exit 2), before anything is uploaded."""
    cfg = compose_for_cluster(job, overrides)
    secret_policy.check_config(cfg, f"rayloom submit {job}")
    root = project_root() if cfg.cluster.job_packaging == "working_dir" else repo_root()
    if cfg.cluster.job_packaging == "working_dir" and not (root / "jobs" / f"{job}.py").is_file():
        raise UserError(f"no entrypoint jobs/{job}.py in {root}")
    spec = build_job_spec(job, overrides, cfg.cluster, root, submission_id,
                          secret_names=secret_policy.configured_secret_names(cfg))
    return cfg, spec


def submit(job: str, overrides: list[str], *, address: str = "", no_wait: bool = False,
           submission_id: str = "") -> int:
    """`rayloom submit`: the job's exit status (0 at once with `no_wait`, after printing its id)."""
    cfg, spec = prepare_job(job, overrides, submission_id)
    address = resolve_job_address(cfg.cluster, address)
    client = connect_job_client(cfg.cluster, address)
    with job_api_errors(address):
        job_id = submit_job(client, spec)
    print(f"rayloom submit: submitted {job_id} to {address}", file=sys.stderr, flush=True)
    if no_wait:
        print(job_id)
        return 0
    try:
        follow_logs(client, job_id)
        info = wait_for_terminal(client, job_id)
    except KeyboardInterrupt:
        print(f"\nrayloom submit: stopped following; {job_id} keeps running "
              f"(`rayloom jobs logs {job_id} -f`, `rayloom jobs stop {job_id}`)", file=sys.stderr)
        return 130
    code = job_exit_code(info)
    # Ray's message repeats the log tail after its first line; the logs were already streamed.
    first_line = (info.message or "").splitlines()[0] if info.message else ""
    detail = "" if code == 0 else f" (exit code {code}): {first_line}".rstrip(": ")
    print(f"rayloom submit: {job_id} {job_status_text(info)}{detail}", file=sys.stderr)
    return code


def open_job_api(overrides: list[str], address: str = ""):
    """(client, address) of the cluster that `overrides` / `address` name, for the `jobs` actions."""
    cluster = compose_for_cluster("run", overrides).cluster
    address = resolve_job_address(cluster, address)
    return connect_job_client(cluster, address), address


@contextmanager
def job_api_errors(address: str) -> Iterator[None]:
    """Refusals of the job API (unknown job id, lost connection) become user errors."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        raise_job_api_error(exc, address)


def list_jobs(client) -> int:
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'SUBMISSION ID':40} {'STATUS':10} {'STARTED':19} ENTRYPOINT")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        entry = job.entrypoint if len(job.entrypoint) <= 70 else job.entrypoint[:67] + "..."
        print(f"{job.submission_id or job.job_id or '-':40} {job_status_text(job):10} {started:19} {entry}")
    return 0


def show_status(client, job_id: str) -> int:
    info = client.get_job_info(job_id)
    status = job_status_text(info)
    print(f"{job_id}: {status}")
    if status in TERMINAL:
        print(f"  exit code: {job_exit_code(info)}")
    if info.message:
        print(f"  message: {info.message.splitlines()[0]}")
    print(f"  entrypoint: {info.entrypoint}")
    return 0


def show_logs(client, job_id: str, follow: bool = False) -> int:
    if follow:
        follow_logs(client, job_id)
    else:
        sys.stdout.write(client.get_job_logs(job_id))
    return 0


def stop_job(client, job_id: str) -> int:
    client.stop_job(job_id)
    info = wait_for_terminal(client, job_id, timeout_s=60)
    print(f"{job_id}: {job_status_text(info)}")
    return 0 if job_status_text(info) in TERMINAL else 1
