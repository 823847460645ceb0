"""A user's folder at the output path of every command that writes (export, train, eval, tune; data
is in test_data_hostile_input.py) is refused through the real CLI, with exit 2, the path named and
no traceback, before any work starts; the user's files inside it and beside it are untouched. An
export to a new folder beside the user's files writes only its own folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.serve_fixtures import make_lora_adapter

from rayloom import storage

pytestmark = pytest.mark.reliability

USER_FILES = {"thesis.tex": "keep", "manifest.json": '{"name": "webapp"}'}  # not a rayloom manifest


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, text in USER_FILES.items():
        (path / name).write_text(text)
    (path.parent / "beside.txt").write_text("keep too")
    return path


def _untouched(path: Path) -> None:
    assert {p.name: p.read_text() for p in path.iterdir()} == USER_FILES
    assert (path.parent / "beside.txt").read_text() == "keep too"


def _rayloom(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayloom.cli", *args], capture_output=True, text=True, timeout=300)


def _refused(out: subprocess.CompletedProcess, path: Path) -> None:
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert str(path) in out.stderr and "not written by rayloom" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]


def test_export_refuses_a_user_folder_and_writes_only_its_own_beside_it(tiny_model_dir, tmp_path):
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    user = _user_folder(tmp_path / "out" / "mine")
    args = ["export", "--adapter", str(adapter), "--base", str(tiny_model_dir)]
    _refused(_rayloom(*args, "--out", str(user)), user)
    _untouched(user)
    fresh = tmp_path / "out" / "merged"
    out = _rayloom(*args, "--out", str(fresh))
    assert out.returncode == 0, out.stderr[-2000:]
    assert storage.is_committed(fresh) and (fresh / "config.json").is_file()
    _untouched(user)


def test_train_refuses_a_user_folder_at_its_export_path_before_training(tmp_path):
    user = _user_folder(tmp_path / "exports" / "mine")
    _refused(_rayloom("train", "model=tiny-2l", f"storage.root={tmp_path / 'runs'}", f"train.export_dir={user}"), user)
    _untouched(user)


def test_eval_refuses_a_user_folder_at_its_output_before_evaluating(tmp_path):
    user = _user_folder(tmp_path / "reports" / "mine")
    _refused(_rayloom("eval", "model=tiny-2l", f"storage.root={tmp_path / 'runs'}", f"eval.output={user}"), user)
    _untouched(user)


def test_tune_refuses_a_user_folder_at_its_sweep_path_before_starting(tmp_path):
    user = _user_folder(tmp_path / "runs" / "tune" / "mine")
    _refused(_rayloom("tune", "model=tiny-2l", f"storage.root={tmp_path / 'runs'}", "tune.name=mine"), user)
    _untouched(user)
