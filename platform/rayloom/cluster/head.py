"""A local Ray head started with `ray start --head`, token auth on, and stopped by its own session.

`ray stop` kills every Ray process of the machine (other users' embedded clusters too), so the
head runs as `ray start --head --block` in a new process session: SIGTERM to that process makes
Ray shut down everything it started, and anything left in the session is killed after a grace
period. The head's state (pid, its start time, addresses, temp dir) lives in a small JSON file in
the state dir. `stop_head` acts only on what it can prove it started: the recorded pid with the same
start time and command line (a reused pid is left alone), and a temp dir named by TEMP_PREFIX.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from rayloom.errors import UserError
from rayloom.ports import free_port
from rayloom.processes import pid_alive
from rayloom.runtime import DEFAULT_TOKEN_PATH, auth_headers
from rayloom.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

STATE_FILE = "head.json"
# The head's Ray temp dir: a fresh /tmp/rayloom-ray-XXXX. `stop_head` removes nothing else.
TEMP_PARENT = Path("/tmp")
TEMP_PREFIX = "rayloom-ray-"


@dataclass
class HeadState:
    pid: int
    gcs_address: str
    dashboard_url: str
    temp_dir: str
    token_path: str
    log_path: str
    autoscaling_config: str = ""
    # psutil's create_time of the head process: tells it apart from a later process with the same pid.
    create_time: float = 0.0


def default_state_dir() -> Path:
    root = os.environ.get("RAYLOOM_CACHE_DIR") or "~/.cache/rayloom"
    return Path(root).expanduser() / "cluster"


def ensure_token(path: str | Path) -> Path:
    """Use the token file at `path`, creating one (owner-only) when it is missing, as Ray does."""
    token_path = Path(path).expanduser()
    if not token_path.is_file():
        token_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        log.info("generated a Ray auth token at %s", token_path)
    return token_path


def read_state(state_dir: Path) -> HeadState | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return HeadState(**json.loads(path.read_text()))


is_alive = pid_alive  # the name the cluster commands use


def head_env(token_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The head must not join some other cluster, and its token comes from the file only.
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)})
    # Job entrypoints run `python ...` from PATH: make that this interpreter (the project's venv),
    # as an activated venv would.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def _ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    found = str(candidate) if candidate.is_file() else shutil.which("ray")
    if not found:
        raise UserError("the `ray` command was not found next to this Python or on PATH")
    return found


def start_head(state_dir: Path, *, port: int, dashboard_port: int, num_cpus: int, num_gpus: int = 0,
               token_path: str | Path = DEFAULT_TOKEN_PATH, autoscaling_config: Path | None = None,
               extra_env: dict[str, str] | None = None, ready_timeout_s: float = 120.0) -> HeadState:
    """Start `ray start --head --block` detached, wait until its job API answers, save its state."""
    # Ray loads in about a second: only `cluster up` pays for it.
    from ray.util import get_node_ip_address

    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing and is_alive(existing.pid):
        raise UserError(f"a local cluster is already up (pid {existing.pid}, {existing.dashboard_url}); "
                        "run `rayloom cluster down` first")
    token = ensure_token(token_path)
    # Short, private temp dir: Ray's socket paths must stay under the OS limit (~107 chars).
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=TEMP_PARENT)
    node_ip = get_node_ip_address()
    command = [
        _ray_executable(), "start", "--head", "--block", "--disable-usage-stats",
        f"--port={port}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
        # The dashboard (job API) listens on loopback only: reach a remote one through a tunnel.
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp_dir}",
    ]
    if autoscaling_config is not None:
        command.append(f"--autoscaling-config={autoscaling_config}")
    log_path = state_dir / "head.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, env=head_env(token, extra_env), stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:  # exited at once: _wait_ready reports its log
        create_time = 0.0
    state = HeadState(pid=process.pid, gcs_address=f"{node_ip}:{port}",
                      dashboard_url=f"http://127.0.0.1:{dashboard_port}", temp_dir=temp_dir,
                      token_path=str(token), log_path=str(log_path),
                      autoscaling_config=str(autoscaling_config or ""), create_time=create_time)
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    try:
        _wait_ready(state, process, ready_timeout_s)
    except BaseException:
        stop_head(state_dir)
        raise
    return state


def _wait_ready(state: HeadState, process: subprocess.Popen, timeout_s: float) -> None:
    # Ray's clients load Ray (about a second): only `cluster up/status` pay for it.
    from ray.job_submission import JobSubmissionClient
    from ray.util.state.exception import RayStateApiException

    headers = auth_headers(state.token_path)

    def ready() -> bool:
        if process.poll() is not None:
            tail = Path(state.log_path).read_text()[-2000:]
            raise UserError(f"`ray start --head` exited with code {process.returncode}; its log ends with:\n{tail}")
        try:
            JobSubmissionClient(state.dashboard_url, headers=headers).list_jobs()
            # The job API can answer a moment before the head's raylet has registered.
            return any(node.state == "ALIVE" for node in list_nodes(state))
        except (OSError, RuntimeError, RayStateApiException):  # not up yet (refused, 5xx, no JSON)
            return False

    try:
        wait_until(ready, timeout_s, interval_s=0.5, message=f"the Ray head on {state.dashboard_url}")
    except WaitTimeout:
        raise UserError(f"the Ray head did not answer on {state.dashboard_url} within {timeout_s:.0f}s "
                        f"(log: {state.log_path})") from None


def list_nodes(state: HeadState) -> list:
    """The head's nodes, alive and removed, from Ray's state API (`NodeState` records)."""
    # Ray's state client loads Ray (about a second): only `cluster up/status` pay for it.
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address=state.dashboard_url, headers=auth_headers(state.token_path))
    return client.list(StateResource.NODES, options=ListApiOptions(detail=True, limit=1000),
                       raise_on_missing_output=False)


def _session_processes(session_id: int, started_after: float = 0.0) -> list:
    """Processes of the session led by the process created at `started_after` (psutil create_time).

    A session's id is its leader's pid. Linux does not hand that pid to a new process while any
    process of the session lives, so once the pid belongs to a process created at another time
    (the leader died, every member with it, and the pid was reused - fast where pids wrap, as in
    a CI container) the old session is empty: that newcomer's own session is not ours. Without a
    recorded start time (0) the session is scanned as it is."""

    def reused(proc: psutil.Process) -> bool:
        return bool(started_after) and abs(proc.create_time() - started_after) > 1.0

    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) != session_id or proc.create_time() < started_after - 1.0:
                continue
            if proc.pid == session_id and reused(proc):
                return []
            found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    with contextlib.suppress(psutil.Error):  # the pid may have been reused while the scan ran
        if reused(psutil.Process(session_id)):
            return []
    return found


def owns_head_process(state: HeadState) -> bool:
    """True when `state.pid` is still the `ray start --head` this state recorded: same start time
    (when recorded) and a command line naming its temp dir. False for a reused pid or a dead one."""
    try:
        proc = psutil.Process(state.pid)
        if state.create_time and abs(proc.create_time() - state.create_time) > 1.0:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "start" in cmdline and "--head" in cmdline and f"--temp-dir={state.temp_dir}" in cmdline


def is_own_temp_dir(path: str) -> bool:
    """A directory `start_head` made: directly in /tmp, named rayloom-ray-*, owned by this user, no link."""
    candidate = Path(path)
    try:
        info = candidate.lstat()
    except OSError:
        return False
    return (candidate.is_absolute() and candidate.parent == TEMP_PARENT and candidate.name.startswith(TEMP_PREFIX)
            and ".." not in candidate.parts and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid())


def stop_head(state_dir: Path, grace_s: float = 10.0) -> bool:
    """Stop the head recorded in `state_dir` and what it started (processes of its session).

    Returns False when nothing was running. Only processes provably started by that head are
    signalled: the recorded pid when its start time and command line still match, and processes of
    its session created after it. When the pid now belongs to another process (the head died and the
    pid was reused, e.g. by a shell) nothing is killed: the kernel does not reuse a pid while a
    process of that session lives, so nothing of the old head is left there. Only a temp dir named
    /tmp/rayloom-ray-* is removed. Other Ray clusters on the machine are untouched.
    """
    state = read_state(state_dir)
    if state is None:
        return False
    was_running = owns_head_process(state)
    pid_reused = not was_running and is_alive(state.pid)
    if was_running:
        os.kill(state.pid, signal.SIGTERM)
        try:
            wait_until(lambda: not is_alive(state.pid), grace_s, interval_s=0.2, message="the head to exit")
        except WaitTimeout:
            log.warning("the Ray head (pid %d) did not exit within %.0fs of SIGTERM; killing its session",
                        state.pid, grace_s)
    if pid_reused:
        log.warning("pid %d recorded for the Ray head now belongs to another process; it and its session are left "
                    "alone", state.pid)
        leftovers = []
    else:
        # Whatever Ray's own shutdown left behind (workers, fake nodes) shares the head's session id.
        leftovers = _session_processes(state.pid, state.create_time)
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=10)
    if is_own_temp_dir(state.temp_dir):
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    elif state.temp_dir and Path(state.temp_dir).exists():
        log.warning("not removing %s: it is not a %s%s* directory of this user", state.temp_dir, TEMP_PARENT / "",
                    TEMP_PREFIX)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return was_running


def session_processes(state: HeadState) -> list:
    """Processes still belonging to the head's session (for checks that nothing leaked)."""
    return _session_processes(state.pid, state.create_time)
