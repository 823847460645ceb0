"""`rayloom doctor --quick` reports versions and readiness without a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def _doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A bare environment (no AWS settings of this machine) that still finds the rayloom under test.
    base = {"PATH": "/usr/bin:/bin", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    return subprocess.run([sys.executable, "-m", "rayloom.cli", "doctor", "--quick", *args], capture_output=True,
                          text=True, timeout=120, env={**base, **env})


def test_doctor_quick_reports_versions_and_s3_presence(tmp_path):
    # An empty HOME and no AWS variables: boto3 finds no credentials anywhere.
    out = _doctor(env={"HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    for needle in ("python", "torch", "ray", "deepspeed", "transformers", "peft", "cpu cores", "memory",
                   "embedded local Ray"):
        assert needle in out.stdout
    assert re.search(r"^torch +ok, cuda=(yes|no) \(", out.stdout, re.M), out.stdout
    assert re.search(r"^s3 credentials +no \(", out.stdout, re.M), out.stdout


def test_doctor_reports_an_unreachable_cluster_and_present_credentials(tmp_path):
    env = {"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "doctor-test-secret",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    out = _doctor("cluster.address=127.0.0.1:1", env=env)
    assert out.returncode == 1
    assert "not reachable" in out.stdout and "1 check(s) failed" in out.stdout
    assert re.search(r"^s3 credentials +yes, endpoint http://127.0.0.1:9 \(", out.stdout, re.M), out.stdout
    assert "doctor-test-secret" not in out.stdout + out.stderr
