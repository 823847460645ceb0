"""Reliability suite: real local disk and the real moto S3 server, faults injected deterministically.

A writer runs as a subprocess that commits with RAYLOOM_TEST_COMMIT_FAULT set (storage/_fault.py):
"kill:N" SIGKILLs it after its N-th file, "pause:N:<go>" makes it wait after its N-th file until
the test creates <go>, so the test acts at an exact point of the commit, not by racing a timer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayloom import storage
from rayloom.waiting import wait_until

_COMMIT = "import sys\nfrom rayloom import storage\nstorage.commit_dir(sys.argv[1], sys.argv[2])\n"


def tree(path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def read_all(uri: str) -> dict[str, str]:
    """Every file of the version `uri` names, read after resolving it once."""
    info = storage.read_commit(uri)
    assert info is not None, f"{uri} is not committed"
    return {rel: storage.read_text(storage.join(info.path, rel)) for rel in info.files}


def stored_versions(dest: str) -> set[str]:
    if storage.is_s3(dest):
        bucket, _, key = dest[len("s3://"):].partition("/")
        listed = storage.s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{key}/", Delimiter="/")
        return {p["Prefix"][len(key) + 1:].rstrip("/") for p in listed.get("CommonPrefixes", [])}
    return set(os.listdir(os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.versions")))


class Writer:
    """A commit running in another process, optionally stopped at a fault point."""

    def __init__(self, src: Path, dest: str, fault: str = "", env: dict | None = None):
        full_env = {**os.environ, **(env or {})}
        if fault:
            full_env["RAYLOOM_TEST_COMMIT_FAULT"] = fault
        self.proc = subprocess.Popen([sys.executable, "-c", _COMMIT, str(src), dest], env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout_s: float = 120) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, err


class PausedWriter(Writer):
    """A writer paused after `after` files, until `resume()`."""

    def __init__(self, src: Path, dest: str, go: Path, after: int = 2, env: dict | None = None):
        self.go = go
        super().__init__(src, dest, fault=f"pause:{after}:{go}", env=env)
        wait_until(lambda: Path(f"{go}.ready").exists() or self.proc.poll() is not None, 60,
                   interval_s=0.05, message="the writer to reach its pause point")
        assert self.proc.poll() is None, self.proc.communicate()[1]

    def resume(self) -> None:
        self.go.write_text("go")


@pytest.fixture(params=["local", "s3"])
def dest(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "runs" / "models" / "m")
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3['bucket']}/reliability/{request.node.name.replace('[', '-').rstrip(']')}"


@pytest.fixture
def rel() -> SimpleNamespace:
    """The helpers above, for test modules (a conftest is not importable by name under importlib mode)."""
    return SimpleNamespace(tree=tree, read_all=read_all, stored_versions=stored_versions, Writer=Writer,
                           PausedWriter=PausedWriter)
