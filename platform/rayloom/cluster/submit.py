"""`rayloom submit <job> [overrides]` and `rayloom jobs list|status|logs|stop`.

Submission composes the job's config locally first, so a bad override fails here (exit 2) before
anything is uploaded; then it sends jobs/<job>.py with the same overrides to the cluster's job API
(Ray Jobs SDK), follows the logs and returns the job's own exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from rayloom.cluster.client import connect_job_client, raise_job_api_error, resolve_job_address
from rayloom.cluster.job_spec import JobSpec, build_job_spec, override_key
from rayloom.config import ClusterConfig, RayloomConfig, compose, repo_root
from rayloom.errors import NotBuiltError, UserError

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ToolArgParser(argparse.ArgumentParser):
    """argparse that reports mistakes as UserError (exit 2 via the CLI, no usage dump to stdout)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


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


def wait_for_terminal(client, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None):
    start = time.monotonic()
    while True:
        info = client.get_job_info(job_id)
        if job_status_text(info) in TERMINAL:
            return info
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return info
        time.sleep(poll_s)


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


def build_submit_parser() -> argparse.ArgumentParser:
    parser = ToolArgParser(prog="rayloom submit",
                     description="Submit jobs/<job>.py with Hydra overrides to cluster.address as a Ray job, "
                                 "follow its logs and exit with the job's exit status.")
    parser.add_argument("job", help="run, data, train, tune, eval or serve")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, composed locally first, e.g. train.lr=3e-4")
    parser.add_argument("--address", default="", help="job API address (default: cluster.address / RAY_ADDRESS)")
    parser.add_argument("--no-wait", action="store_true", help="submit, print the submission id and return")
    parser.add_argument("--submission-id", default="", help="id for the job (default: rayloom-<job>-<time>-<rand>)")
    return parser


def submit_main(argv: list[str]) -> int:
    from rayloom.entry import NOT_BUILT

    args = build_submit_parser().parse_intermixed_args(argv)
    cfg = compose_for_cluster(args.job, list(args.overrides))  # a bad override fails here, before upload
    if args.job in NOT_BUILT:
        raise NotBuiltError(f"`rayloom submit {args.job}`: {NOT_BUILT[args.job]} is not built yet. Nothing was "
                            "submitted.")
    root = project_root() if cfg.cluster.job_packaging == "working_dir" else repo_root()
    if cfg.cluster.job_packaging == "working_dir" and not (root / "jobs" / f"{args.job}.py").is_file():
        raise UserError(f"no entrypoint jobs/{args.job}.py in {root}")
    address = resolve_job_address(cfg.cluster, args.address)
    client = connect_job_client(cfg.cluster, address)
    spec = build_job_spec(args.job, list(args.overrides), cfg.cluster, root, args.submission_id)
    try:
        job_id = submit_job(client, spec)
    except (RuntimeError, ValueError) as exc:
        raise_job_api_error(exc, address)
    print(f"rayloom submit: submitted {job_id} to {address}", file=sys.stderr, flush=True)
    if args.no_wait:
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


_JOB_ACTION_HELP = {
    "list": "every job on the cluster, oldest first",
    "status": "status, exit code and message of one job",
    "logs": "the job's logs (-f: follow until it ends)",
    "stop": "stop a running job and wait until it has stopped",
}


def build_jobs_parser(action: str) -> argparse.ArgumentParser:
    parser = ToolArgParser(prog=f"rayloom jobs {action}", description=_JOB_ACTION_HELP[action])
    if action != "list":
        parser.add_argument("job_id")
    if action == "logs":
        parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("overrides", nargs="*", help="cluster overrides, e.g. cluster.auth_token_path=...")
    parser.add_argument("--address", default="", help="job API address (default: cluster.address / RAY_ADDRESS)")
    return parser


def jobs_main(argv: list[str]) -> int:
    if not argv:
        raise UserError(f"missing action: choose one of {', '.join(_JOB_ACTION_HELP)}")
    if argv[0] in ("-h", "--help"):
        print("usage: rayloom jobs <action> [--address URL] [overrides...]\n\nactions:")
        for action, text in _JOB_ACTION_HELP.items():
            print(f"  {action:8} {text}")
        return 0
    action, rest = argv[0], argv[1:]
    if action not in _JOB_ACTION_HELP:
        raise UserError(f"unknown action {action!r}: choose one of {', '.join(_JOB_ACTION_HELP)}")
    args = build_jobs_parser(action).parse_intermixed_args(rest)
    cluster: ClusterConfig = compose_for_cluster("run", list(args.overrides)).cluster
    address = resolve_job_address(cluster, args.address)
    client = connect_job_client(cluster, address)
    try:
        return _JOB_ACTIONS[action](client, args)
    except (RuntimeError, ValueError) as exc:
        raise_job_api_error(exc, address)
        return 2


def _list(client, args) -> int:
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'SUBMISSION ID':40} {'STATUS':10} {'STARTED':19} ENTRYPOINT")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        entry = job.entrypoint if len(job.entrypoint) <= 70 else job.entrypoint[:67] + "..."
        print(f"{job.submission_id or job.job_id or '-':40} {job_status_text(job):10} {started:19} {entry}")
    return 0


def _status(client, args) -> int:
    info = client.get_job_info(args.job_id)
    status = job_status_text(info)
    print(f"{args.job_id}: {status}")
    if status in TERMINAL:
        print(f"  exit code: {job_exit_code(info)}")
    if info.message:
        print(f"  message: {info.message.splitlines()[0]}")
    print(f"  entrypoint: {info.entrypoint}")
    return 0


def _logs(client, args) -> int:
    if args.follow:
        follow_logs(client, args.job_id)
    else:
        sys.stdout.write(client.get_job_logs(args.job_id))
    return 0


def _stop(client, args) -> int:
    client.stop_job(args.job_id)
    info = wait_for_terminal(client, args.job_id, timeout_s=60)
    print(f"{args.job_id}: {job_status_text(info)}")
    return 0 if job_status_text(info) in TERMINAL else 1


_JOB_ACTIONS = {"list": _list, "status": _status, "logs": _logs, "stop": _stop}
