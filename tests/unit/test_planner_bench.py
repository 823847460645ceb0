"""The planner's benchmarks without running DeepSpeed: bench_plan is discoverable by bench/run.py, and the
GPU variant's dry run builds every variant's model and plan (full size planned too) on CPU."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import bench_plan  # noqa: E402
import gpu_plan  # noqa: E402
import run as bench_run  # noqa: E402


def test_bench_plan_is_discovered_and_covers_the_required_rows():
    assert "plan" in bench_run.available()
    assert bench_plan.DESCRIPTION and callable(bench_plan.run)
    rows = " ".join(bench_plan.ROWS)
    assert len(bench_plan.ROWS) >= 8
    for needed in ("zero0", "zero1", "zero2", "zero3", "offload", "ckpt", "lora", "dpo", "seq1024"):
        assert needed in rows, needed


def test_gpu_plan_dry_run_builds_every_variant_on_cpu():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu_plan.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = [line.split(":")[0].removeprefix("built ") for line in proc.stdout.splitlines() if line.startswith("built")]
    assert built == list(gpu_plan.VARIANTS)
    assert all("full-size plan" in line for line in proc.stdout.splitlines() if line.startswith("built"))
