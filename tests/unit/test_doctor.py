"""`rayloom doctor --quick` reports versions and readiness without a traceback."""

from __future__ import annotations

import subprocess
import sys


def test_doctor_quick_reports_versions_and_s3_presence():
    out = subprocess.run([sys.executable, "-m", "rayloom.cli", "doctor", "--quick"], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stdout + out.stderr
    for needle in ("python", "torch", "ray", "deepspeed", "transformers", "peft", "cpu cores", "memory",
                   "s3 credentials", "embedded local Ray"):
        assert needle in out.stdout
    assert "s3 credentials" in out.stdout and ("yes" in out.stdout or "no" in out.stdout)


def test_doctor_reports_an_unreachable_cluster():
    out = subprocess.run([sys.executable, "-m", "rayloom.cli", "doctor", "--quick", "cluster.address=127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "not reachable" in out.stdout
