"""`rayloom submit` and `rayloom jobs` against a real `ray start --head` with token auth on: a tiny
job succeeds, a job whose override composes but fails on the cluster fails with its message and
exit code, a bad override never leaves this machine, and nothing secret travels with a job."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cluster_fixtures import local_head

from rayloom.cluster import jobs_main, submit_main
from rayloom.cluster.client import connect_job_client
from rayloom.cluster.submit import wait_for_terminal
from rayloom.config import ClusterConfig
from rayloom.errors import UserError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with local_head(tmp_path_factory.mktemp("ray-head"), "--num-cpus", "4") as state:
        yield state


def _flags(head) -> list[str]:
    return ["--address", head.dashboard_url, f"cluster.auth_token_path={head.token_path}"]


def _client(head):
    return connect_job_client(ClusterConfig(auth_token_path=head.token_path), head.dashboard_url)


def test_tiny_job_runs_on_the_cluster(head, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret-value-123")
    code = submit_main(["run", "run.stages=[model]", "model=tiny-2l", "--submission-id", "tiny-ok", *_flags(head)])
    out, err = capsys.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    assert "model: tiny-2l" in out and "parameters" in out      # the job's own output, followed live
    assert "tiny-ok SUCCEEDED" in err
    info = _client(head).get_job_info("tiny-ok")
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the project was uploaded
    assert "local-secret-value-123" not in repr(info.runtime_env) + info.entrypoint
    assert "AWS_SECRET_ACCESS_KEY" not in info.runtime_env.get("env_vars", {})
    token = Path(head.token_path).read_text().strip()
    assert token not in out + err


# Long variant, run by `make test-all`: `make test` submits a tiny job and checks jobs list/status/logs/stop, bad overrides and tokens
@pytest.mark.slow
def test_a_tiny_training_job_runs_on_the_cluster(head, tiny_model_dir, tmp_path, capsys):
    from helpers.train_fixtures import pretrain_rows, train_overrides, write_shards

    # Shards as the data job would publish them (a local path: the head runs on this machine).
    root = tmp_path / "runs"
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=24)
    write_shards(f"{root}/data/demo", rows[:20], rows[20:], seq_len=64)
    overrides = train_overrides(root, "train.max_steps=2", "train.checkpoint_every=2", "train.run_name=submitted")
    code = submit_main(["train", *overrides, "--submission-id", "tiny-train", *_flags(head)])
    out, err = capsys.readouterr()
    assert code == 0, out[-4000:] + err[-2000:]
    assert "run submitted: step 2" in out  # Ray Train + DeepSpeed ran as a job on the cluster
    assert "tiny-train SUCCEEDED" in err


def test_an_override_that_fails_on_the_cluster_fails_the_job_with_its_message(head, capsys):
    code = submit_main(["run", "run.stages=[model]", "model=hf", "model.path=/no/such/model",
                        "--submission-id", "bad-path", *_flags(head)])
    out, err = capsys.readouterr()
    assert code == 2  # the job's own exit status: rayloom's user-error code, on the cluster
    assert "model.path='/no/such/model' is not a Hugging Face model directory" in out
    assert "bad-path FAILED (exit code 2)" in err
    assert "Traceback" not in out


def test_a_bad_override_never_reaches_the_cluster(head):
    before = {job.submission_id for job in _client(head).list_jobs()}
    with pytest.raises(UserError, match="train.lr"):
        submit_main(["run", "train.lr=-1", *_flags(head)])
    assert {job.submission_id for job in _client(head).list_jobs()} == before


def test_a_wrong_token_is_refused(head, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token")
    with pytest.raises(UserError, match="token was rejected"):
        jobs_main(["list", "--address", head.dashboard_url, f"cluster.auth_token_path={wrong}"])


def test_jobs_list_status_logs_and_stop(head, capsys):
    client = _client(head)
    sleeper = client.submit_job(entrypoint="python -c 'import time; time.sleep(300)'", submission_id="sleeper")
    flags = _flags(head)
    assert jobs_main(["list", *flags]) == 0
    listing = capsys.readouterr().out
    assert "tiny-ok" in listing and "SUCCEEDED" in listing and "bad-path" in listing and "sleeper" in listing
    assert jobs_main(["status", "bad-path", *flags]) == 0
    status = capsys.readouterr().out
    assert "FAILED" in status and "exit code: 2" in status
    assert jobs_main(["logs", "bad-path", *flags]) == 0
    assert "/no/such/model" in capsys.readouterr().out
    assert jobs_main(["stop", sleeper, *flags]) == 0
    assert "sleeper: STOPPED" in capsys.readouterr().out
    assert str(wait_for_terminal(client, sleeper, timeout_s=30).status.value) == "STOPPED"
    with pytest.raises(UserError, match="refused"):
        jobs_main(["status", "no-such-job", *flags])
