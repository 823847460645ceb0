"""What can be checked of the GPU path without a GPU: the benchmark script builds every variant's
model and DeepSpeed config on CPU, and MFU is taken against the right datasheet peak."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_train  # noqa: E402


def test_gpu_bench_dry_run_builds_every_variant_on_cpu():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu_train.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = [line.split(":")[0] for line in proc.stdout.splitlines()]
    assert built == list(gpu_train.VARIANTS)


def test_datasheet_peak_matches_the_device_name():
    assert gpu_train.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gpu_train.datasheet_peak("NVIDIA H100 PCIe") == 756.0e12
    assert gpu_train.datasheet_peak("NVIDIA H200") == 989.4e12
    assert gpu_train.datasheet_peak("Some CPU") is None
