"""Autoscaling without a cloud: `rayloom cluster up --local-fake` starts Ray's autoscaler over
cluster/local-fake-gpu.yaml; a task that asks for a GPU of a given type makes it add a fake node
of that type, and the node is removed once idle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT
from helpers.cluster_fixtures import local_head

from rayloom.cluster import cluster_main

pytestmark = pytest.mark.integration


def test_a_gpu_task_scales_a_fake_gpu_node_up_and_idle_removes_it(tmp_path, capsys):
    state_dir = tmp_path / "fake"
    with local_head(state_dir, "--local-fake", "--idle-timeout-minutes", "0.1") as state:
        assert state.autoscaling_config
        capsys.readouterr()
        assert cluster_main(["status", "--state-dir", str(state_dir)]) == 0
        assert "1 alive node(s)" in capsys.readouterr().out  # only the head: GPU types start at 0
        # The probe is a separate driver process, as a user's job would be.
        out = subprocess.run(
            [sys.executable, "-m", "rayloom.cli", "cluster", "probe", "--state-dir", str(state_dir), "--gpus", "1",
             "--accelerator-type", "H100", "--timeout", "120", "--wait-idle", "120", "--json"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=400)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["new_node"] is True, result          # the autoscaler added a node for the task
        assert result["accelerator"] == "H100" and result["node_gpus"] == 2
        assert result["gpu_ids"] == ["0"]                  # Ray assigned it one of the node's GPUs
        assert result["removed_when_idle"] is True, result  # and removed the node once idle
        capsys.readouterr()
        assert cluster_main(["status", "--state-dir", str(state_dir)]) == 0
        status = capsys.readouterr().out
        assert "1 alive node(s), 1 removed" in status and "H100" not in status
