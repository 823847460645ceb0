"""Job submission without a cluster: what is sent (entrypoint, runtime_env, overrides), secrets by
reference only, and user mistakes that fail before anything is submitted."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile

import pytest
from helpers import REPO_ROOT

from rayloom.cluster import job_env, submit_main
from rayloom.cluster.client import resolve_job_address
from rayloom.cluster.job_spec import build_entrypoint, build_job_spec, job_side_overrides
from rayloom.cluster.submit import job_exit_code
from rayloom.config import ClusterConfig
from rayloom.errors import UserError


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayloom.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def test_job_side_overrides_join_the_jobs_own_cluster():
    out = job_side_overrides(["model=tiny-2l", "cluster.address=http://head:8265",
                              "+cluster.auth_token_path=/home/me/token", "train.lr=3e-4"])
    assert out[:2] == ["model=tiny-2l", "train.lr=3e-4"]
    assert out[2:] == ["cluster.address=''", "cluster.auth_token_path=''"]


def test_entrypoint_runs_the_hydra_job_with_the_same_overrides():
    entry = build_entrypoint("run", ["run.stages=[model]", "model.name=my model"], ClusterConfig())
    assert entry.startswith('RAYLOOM_CONF_DIR="$PWD/conf" python ./jobs/run.py ')
    argv = shlex.split(entry.split(" ", 1)[1])
    assert argv[:4] == ["python", "./jobs/run.py", "run.stages=[model]", "model.name=my model"]
    assert argv[-2:] == ["cluster.address=''", "cluster.auth_token_path=''"]


def test_image_packaging_runs_from_the_image_and_uploads_nothing():
    cluster = ClusterConfig(job_packaging="image", image="registry.example/rayloom/node:0.1.0")
    spec = build_job_spec("train", ["train=gpu"], cluster, REPO_ROOT)
    assert spec.entrypoint.startswith("python /app/jobs/train.py train=gpu")
    assert set(spec.runtime_env) == {"image_uri", "env_vars"}
    assert spec.runtime_env["image_uri"] == "registry.example/rayloom/node:0.1.0"


def test_image_packaging_refuses_pip():
    with pytest.raises(UserError, match="cluster.pip"):
        ClusterConfig(job_packaging="image", pip=["einops"])


def test_runtime_env_ships_the_project_without_caches_or_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    monkeypatch.setenv("RAYLOOM_CACHE_DIR", "/home/me/.cache/rayloom")
    spec = build_job_spec("run", ["model=tiny-2l"], ClusterConfig(env={"MY_FLAG": "1"}, pip=["einops==0.8.1"]),
                          REPO_ROOT)
    env = spec.runtime_env
    assert env["working_dir"] == str(REPO_ROOT)
    assert env["py_modules"] == [str(REPO_ROOT / "platform" / "rayloom")]
    assert {".venv", ".venv-tools", ".git", "runs", "outputs", "**/__pycache__"} <= set(env["excludes"])
    assert env["pip"] == ["einops==0.8.1"]
    assert env["env_vars"]["MY_FLAG"] == "1"
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://minio.internal:9000"
    # The job's ray.init repeats these env vars; Ray merges equal keys only when told to.
    assert env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    # A path of the submitting machine means nothing on the cluster.
    assert "RAYLOOM_CACHE_DIR" not in env["env_vars"]
    assert "local-secret-value" not in json.dumps(spec.runtime_env) + spec.entrypoint + json.dumps(spec.metadata)


def test_secrets_are_refused_by_value_and_checked_by_name_on_the_cluster():
    with pytest.raises(UserError, match="HF_TOKEN"):
        build_job_spec("run", [], ClusterConfig(env={"HF_TOKEN": "hf_x"}), REPO_ROOT)
    spec = build_job_spec("run", [], ClusterConfig(secret_env=["HF_TOKEN"]), REPO_ROOT)
    assert spec.entrypoint.startswith("python -m rayloom.cluster.job_env HF_TOKEN && ")
    assert "HF_TOKEN" not in spec.runtime_env["env_vars"]


def test_job_env_check_names_missing_secrets_without_values(monkeypatch, capsys):
    monkeypatch.setenv("RAYLOOM_API_KEY", "sk-present")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert job_env.main(["RAYLOOM_API_KEY"]) == 0
    assert job_env.main(["RAYLOOM_API_KEY", "HF_TOKEN"]) == 2
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "sk-present" not in err


def test_secret_env_names_are_validated():
    with pytest.raises(UserError, match="cluster.secret_env"):
        ClusterConfig(secret_env=["HF TOKEN; rm -rf /"])


def test_job_address_must_be_the_job_api(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError, match="cluster.address"):
        resolve_job_address(ClusterConfig())
    with pytest.raises(UserError, match="8265"):
        resolve_job_address(ClusterConfig(address="10.0.0.5:6379"))
    assert resolve_job_address(ClusterConfig(), "http://127.0.0.1:8265/") == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://ray.internal:8265")
    assert resolve_job_address(ClusterConfig()) == "https://ray.internal:8265"


def test_exit_codes_follow_the_job():
    from ray.job_submission import JobDetails, JobStatus, JobType

    def details(status, code=None):
        return JobDetails(type=JobType.SUBMISSION, entrypoint="x", status=status, driver_exit_code=code)

    assert job_exit_code(details(JobStatus.SUCCEEDED, 0)) == 0
    assert job_exit_code(details(JobStatus.FAILED, 2)) == 2
    assert job_exit_code(details(JobStatus.FAILED, None)) == 1
    assert job_exit_code(details(JobStatus.STOPPED)) == 1


def test_a_bad_override_fails_before_contacting_any_cluster():
    # Port 1 would refuse the connection: the error must come from composing, naming the key.
    with pytest.raises(UserError, match="train.lr"):
        submit_main(["run", "train.lr=-1", "--address", "http://127.0.0.1:1"])


def test_an_unreachable_cluster_is_a_user_error():
    with pytest.raises(UserError, match="could not reach"):
        submit_main(["run", "model=tiny-2l", "--address", "http://127.0.0.1:1"])


def test_overrides_may_follow_options():
    # The override after --address still reaches compose (and fails there, before any contact).
    with pytest.raises(UserError, match="train.lr"):
        submit_main(["run", "--address", "http://127.0.0.1:1", "model=tiny-2l", "--no-wait", "train.lr=-1"])


def test_a_missing_token_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="auth_token_path"):
        submit_main(["run", f"cluster.auth_token_path={tmp_path}/nope", "--address", "http://127.0.0.1:1"])


@pytest.mark.parametrize("args,needle", [
    (("submit",), "job"),
    (("submit", "bake"), "invalid choice"),
    (("jobs",), "<action>"),
    (("jobs", "frobnicate"), "invalid choice"),
    (("jobs", "status"), "job_id"),
    (("jobs", "list", "--follow"), "unrecognized arguments: --follow"),
    (("cluster",), "<action>"),
    (("cluster", "up", "--port", "x"), "--port"),
])
def test_cli_mistakes_exit_2_without_traceback(args, needle):
    out = _cli(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr


def _session_process(*args: str) -> subprocess.Popen:
    """A process in a new session (as `ray start --head` runs), with a child in the same session."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); " \
           "time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True)


def _wait_for_child(proc: subprocess.Popen) -> None:
    import psutil

    from rayloom.waiting import wait_until

    wait_until(lambda: psutil.Process(proc.pid).children(), 30, interval_s=0.1, message="the child process")


def test_stop_head_stops_the_head_it_started_and_its_session(tmp_path):
    import psutil

    from rayloom.cluster.head import HeadState, session_processes, stop_head

    temp_dir = tempfile.mkdtemp(prefix="rayloom-ray-", dir="/tmp")
    head = _session_process("start", "--head", f"--temp-dir={temp_dir}")
    _wait_for_child(head)
    state = HeadState(pid=head.pid, gcs_address="", dashboard_url="", temp_dir=temp_dir, token_path="", log_path="",
                      create_time=psutil.Process(head.pid).create_time())
    (tmp_path / "head.json").write_text(json.dumps(dataclasses.asdict(state)))
    assert stop_head(tmp_path, grace_s=5) is True
    head.wait(timeout=10)
    assert not session_processes(state)
    assert not os.path.exists(temp_dir) and not (tmp_path / "head.json").exists()


def test_stop_head_leaves_a_reused_pid_and_foreign_dirs_alone(tmp_path, caplog):
    import psutil

    from rayloom.cluster.head import HeadState, session_processes, stop_head

    # The recorded head died and its pid now belongs to someone else's session leader (a shell, tmux).
    other = _session_process()
    _wait_for_child(other)
    foreign = tmp_path / "precious"
    foreign.mkdir()
    state = HeadState(pid=other.pid, gcs_address="", dashboard_url="", temp_dir=str(foreign), token_path="",
                      log_path="", create_time=psutil.Process(other.pid).create_time() - 3600)
    (tmp_path / "head.json").write_text(json.dumps(dataclasses.asdict(state)))
    try:
        assert stop_head(tmp_path, grace_s=1) is False
        assert other.poll() is None and len(session_processes(dataclasses.replace(state, create_time=0))) == 2
        # ...and the newcomer's session is not reported as a leftover of the recorded head (CI flake:
        # a container's pids wrap, so the dead head's pid came back as a new session leader).
        assert session_processes(state) == []
        assert foreign.is_dir()
        assert "belongs to another process" in caplog.text and "not removing" in caplog.text
    finally:
        for proc in psutil.Process(other.pid).children():
            proc.kill()
        other.kill()
        other.wait(timeout=10)


def test_a_token_over_plain_http_to_another_host_is_warned_about(tmp_path, caplog):
    from rayloom.cluster.client import connect_job_client

    token = tmp_path / "token"
    token.write_text("t0ken")
    with pytest.raises(UserError):
        connect_job_client(ClusterConfig(auth_token_path=str(token)), "http://0.0.0.0:1")
    assert "clear text to 0.0.0.0" in caplog.text and "t0ken" not in caplog.text
