"""Choosing a checkpoint: only complete ones (marker written last) are ever used; local and S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayloom import storage
from rayloom.errors import UserError
from rayloom.train import checkpoints as ckpts
from rayloom.train import export_main
from rayloom.train.export import resolve_checkpoint


def _checkpoint(run_dir: str, step: int, token: str = "abc123", complete: bool = True) -> str:
    uri = storage.join(run_dir, ckpts.checkpoint_name(step, token))
    storage.write_text(storage.join(uri, ckpts.STATE_FILE), ckpts.TrainerState(step=step).to_json())
    if complete:
        storage.write_text(storage.join(uri, ckpts.MARKER), "ok\n")
    return uri


def test_names_sort_by_step_and_parse_back():
    names = [ckpts.checkpoint_name(s, "ff00aa") for s in (100, 9, 10)]
    assert sorted(names) == [ckpts.checkpoint_name(s, "ff00aa") for s in (9, 10, 100)]
    assert ckpts.parse_step(names[0]) == 100
    assert ckpts.parse_step("checkpoint_manager_snapshot.json") is None


def test_newest_complete_checkpoint_wins_and_incomplete_ones_are_skipped(tmp_path):
    run = str(tmp_path / "run")
    _checkpoint(run, 2)
    four = _checkpoint(run, 4)
    _checkpoint(run, 6, complete=False)  # a worker died before the marker: never loaded
    (tmp_path / "run" / "not-a-checkpoint").mkdir()
    assert ckpts.latest_complete(run) == (4, four)
    assert [s for s, _ in ckpts.list_checkpoints(run)] == [2, 4, 6]


def test_no_complete_checkpoint_means_start_fresh(tmp_path):
    run = str(tmp_path / "run")
    _checkpoint(run, 3, complete=False)
    assert ckpts.latest_complete(run) is None
    assert ckpts.latest_complete(str(tmp_path / "missing")) is None


def test_trainer_state_round_trips_and_ignores_unknown_keys():
    state = ckpts.TrainerState(step=7, epoch=1, rows_in_epoch=12, resumes=[{"from_step": 4, "checkpoint": "c"}])
    text = state.to_json().replace('"step": 7', '"step": 7, "from_a_newer_version": 1')
    assert ckpts.TrainerState.from_json(text) == state


def test_export_refuses_incomplete_checkpoints(tmp_path):
    run = str(tmp_path / "run")
    incomplete = _checkpoint(run, 5, complete=False)
    with pytest.raises(UserError, match="incomplete"):
        resolve_checkpoint(incomplete)
    with pytest.raises(UserError, match="no complete checkpoint|neither"):
        resolve_checkpoint(run)
    complete = _checkpoint(run, 3)
    assert resolve_checkpoint(run) == complete


def test_export_cli_usage_errors(tmp_path, capsys):
    assert export_main(["--help"]) == 0
    assert "consolidate" in capsys.readouterr().out
    assert export_main([]) == 2  # --out is required
    with pytest.raises(UserError, match="either"):
        export_main(["--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="--base"):
        export_main(["--adapter", str(tmp_path), "--out", str(tmp_path / "x")])


def test_checkpoint_choice_on_s3(s3_server):
    run = f"s3://{s3_server['bucket']}/train-ckpt-test/run"
    _checkpoint(run, 1)
    two = _checkpoint(run, 2)
    _checkpoint(run, 3, complete=False)
    assert ckpts.latest_complete(run) == (2, two)
    assert ckpts.read_state(two).step == 2


def test_mark_complete_writes_the_marker_through_a_pyarrow_filesystem(tmp_path):
    from pyarrow import fs as pafs

    target = tmp_path / "checkpoint_00000001_aaaaaa"
    target.mkdir()
    ckpts.mark_complete(pafs.LocalFileSystem(), str(target))
    assert ckpts.is_complete(str(target)) and (Path(target) / ckpts.MARKER).read_text() == "ok\n"


@pytest.mark.parametrize("policy", ["resume", "overwrite", "error"])
def test_on_existing_policies(tmp_path, policy):
    from rayloom.config import compose
    from rayloom.train.paths import RunPaths, prepare_run_dir

    cfg = compose("train", [f"storage.root={tmp_path}", f"train.on_existing={policy}"])
    directory = RunPaths.of(cfg).run_dir
    assert prepare_run_dir(cfg, directory) is None  # nothing there yet: every policy starts fresh
    _checkpoint(directory, 2)
    newest = _checkpoint(directory, 4)
    if policy == "error":
        with pytest.raises(UserError, match="already has checkpoints"):
            prepare_run_dir(cfg, directory)
    elif policy == "overwrite":
        assert prepare_run_dir(cfg, directory) is None and not ckpts.list_checkpoints(directory)
    else:
        assert prepare_run_dir(cfg, directory) == (4, newest)


def test_export_refuses_outputs_that_would_replace_its_input_or_a_foreign_folder(tmp_path):
    """#15: the output may not be the checkpoint or a folder above it; a folder rayloom did not
    write is refused (nothing is built, nothing deleted) unless --force."""
    run = str(tmp_path / "run")
    checkpoint = _checkpoint(run, 3)
    with pytest.raises(UserError, match="own input"):
        export_main([checkpoint, "--out", run])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="force|overwrite"):
        export_main([checkpoint, "--out", str(foreign)])
    assert (foreign / "notes.txt").read_text() == "keep me"
