"""`rayloom submit` of an elastic run to the autoscaling fake-GPU cluster (`rayloom cluster up
--local-fake`, issue #16): a GPU node is lost mid-run, the run shrinks to the node that is left,
Ray's autoscaler starts a replacement for the run's pending demand, the run grows back onto it and
the job succeeds.

The training workers ask for one `accelerator_type:H100` each, so each lands on its own fake H100
node (fake nodes have GPU resources but no CUDA, so the workers train on CPU: what is under test is
the placement, the node loss and the autoscaler, not the GPU). The test only sees what a user sees:
the job API, the run's checkpoints in storage and the node processes. Faults are deterministic
(tests' RAYLOOM_TEST_TRAIN_FAULT holds, rayloom/train/_fault.py): the run holds after its first
checkpoint on 2 nodes while the test SIGKILLs one node's raylet; if Ray Train restarts it on the one
node left before the replacement is up, it holds after its first checkpoint there until the
replacement is up, so however slow the machine, the run cannot end before the autoscaler has acted.
"""

from __future__ import annotations

import contextlib
import signal

import psutil
import pytest
from helpers.cluster_fixtures import local_head
from helpers.train_fixtures import pretrain_rows, train_overrides, write_shards

from rayloom.cluster import submit_main
from rayloom.cluster.client import connect_job_client
from rayloom.cluster.submit import TERMINAL, job_status_text, wait_for_terminal
from rayloom.config import ClusterConfig, compose
from rayloom.train import RunPaths
from rayloom.train import checkpoints as ckpts
from rayloom.waiting import wait_until

pytestmark = pytest.mark.integration

NODE_TYPE = "gpu.h100.train"  # cluster/local-fake-gpu.yaml: 2 fake GPUs, at most 2 nodes
EVERY = 3
STEPS = 12


def _fake_raylets(node_type: str) -> dict[str, int]:
    """{node id: raylet pid} of the fake provider's live nodes of one type (their raylets carry the
    provider's environment: the node type and the node id it chose)."""
    found = {}
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] != "raylet":
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("RAY_NODE_TYPE_NAME") == node_type:
            found[env["RAY_OVERRIDE_NODE_ID_FOR_TESTING"]] = proc.pid
    return found


def _lose_node(node_id: str) -> int:
    """SIGKILL every process of one fake node - raylet, agents, workers: they all carry the node id
    the provider gave it - as a reclaimed spot machine takes them all at once. Killing the raylet
    alone left its training worker running on for two more checkpoints. Returns how many died."""
    victims = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id:
                victims.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


# Long variant, run by `make test-all`: `make test` drains a node of an in-process elastic run
# (test_train_elastic.py) and scales a fake GPU node up and down (test_cluster_autoscale.py)
@pytest.mark.slow
def test_a_submitted_elastic_run_survives_losing_a_fake_gpu_node(tmp_path, tiny_model_dir, monkeypatch):
    killed, replaced = tmp_path / "killed", tmp_path / "replaced"
    # The head's environment reaches every Ray process, the fake nodes' included: detect a dead
    # node in ~3 s instead of ~15 s, and arm the holds in the training workers.
    monkeypatch.setenv("RAY_health_check_period_ms", "1000")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    monkeypatch.setenv("RAYLOOM_TEST_TRAIN_FAULT", f"hold:2:{killed};hold-shrunk:{replaced}")

    root = tmp_path / "runs"
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=48)
    write_shards(f"{root}/data/demo", rows[:40], rows[40:], seq_len=64)
    overrides = train_overrides(
        root, "train.run_name=spot", "train.num_workers=[1,2]", "train.global_batch_size=4",
        "+train.worker_resources={accelerator_type\\:H100:1}", "train.elastic_resize_interval_s=2",
        f"train.checkpoint_every={EVERY}", f"train.max_steps={STEPS}", "train.export=false",
        "tracking.report_interval_s=0.5")
    run_dir = RunPaths.of(compose("train", overrides)).run_dir

    # 4 CPUs on the head: the job's driver and Ray Data's tasks fit there, so GPU nodes are added
    # for the training workers only.
    with local_head(tmp_path / "fake", "--local-fake", "--num-cpus", "4") as head:
        assert _fake_raylets(NODE_TYPE) == {}  # GPU node types start at 0 nodes
        flags = ["--address", head.dashboard_url, f"cluster.auth_token_path={head.token_path}"]
        assert submit_main(["train", *overrides, "--no-wait", "--submission-id", "spot", *flags]) == 0
        client = connect_job_client(ClusterConfig(auth_token_path=head.token_path), head.dashboard_url)

        def while_running(done):
            def check():
                info = client.get_job_info("spot")
                assert job_status_text(info) not in ("FAILED", "STOPPED", "SUCCEEDED"), \
                    client.get_job_logs("spot")[-4000:]
                return done()
            return check

        # The autoscaler started two H100 nodes for the run; it checkpointed on both and holds.
        ready = tmp_path / "killed.ready"
        wait_until(while_running(ready.exists), timeout_s=600, interval_s=1.0,
                   message="a checkpoint written by 2 workers")
        held_step = int(ready.read_text())
        before = _fake_raylets(NODE_TYPE)
        assert len(before) == 2, before
        assert _lose_node(sorted(before)[-1]) >= 2  # a spot node reclaimed without notice: raylet, worker, ...
        killed.touch()

        # The autoscaler replaces the lost node for the run's demand. Ray Train restarts the run
        # on 2 nodes if the replacement is up by then; otherwise on the one left, where the run
        # holds after its first checkpoint until the replacement is up (so it cannot end at 1).
        new_nodes: set[str] = set()

        def replaced_or_ended() -> bool:
            new_nodes.update(set(_fake_raylets(NODE_TYPE)) - set(before))
            if job_status_text(client.get_job_info("spot")) in TERMINAL:
                return True
            return bool(new_nodes) and (tmp_path / "replaced.ready").exists()

        wait_until(replaced_or_ended, timeout_s=600, interval_s=1.0, message="a replacement H100 node")
        replaced.touch()
        info = wait_for_terminal(client, "spot", timeout_s=600)
        logs = client.get_job_logs("spot")
        assert job_status_text(info) == "SUCCEEDED", logs[-4000:]
        assert f"run spot: step {STEPS}" in logs
        assert new_nodes, "the autoscaler never replaced the lost node"

    state = ckpts.read_state(ckpts.latest_complete(run_dir)[1])
    assert state.step == STEPS and state.world_size == 2  # it ended on two nodes again
    # Resumed from the checkpoint taken just before the node was lost: no completed step redone.
    after_loss = [r for r in state.resumes if r["from_step"] >= held_step]
    assert after_loss and after_loss[0]["from_step"] == held_step and after_loss[0]["from_workers"] == 2, \
        state.resumes
    if after_loss[0]["workers"] == 1:  # shrunk first: then grew back, each time through universal
        assert after_loss[0]["universal"] and any(r["workers"] == 2 and r["universal"] for r in after_loss[1:])
