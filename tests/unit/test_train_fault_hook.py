"""The test-only hold of rayloom/train/_fault.py: which checkpoints it holds after, and that it ends
when its file appears (the elastic submit test relies on both)."""

from __future__ import annotations

import pytest

from rayloom.train import _fault

SHRUNK = [{"from_workers": 2, "workers": 1}]
GREW = [{"from_workers": 1, "workers": 2}]


def test_unset_does_nothing(monkeypatch):
    monkeypatch.delenv(_fault.ENV, raising=False)
    _fault.after_checkpoint(3, 2, [], 0)  # returns at once


@pytest.mark.parametrize(("spec", "world", "resumes", "holds"), [
    ("hold:2", 2, [], True), ("hold:2", 1, [], False),
    ("hold-shrunk", 1, SHRUNK, True), ("hold-shrunk", 2, GREW, False), ("hold-shrunk", 1, [], False),
])
def test_which_checkpoints_hold(tmp_path, monkeypatch, spec, world, resumes, holds):
    release = tmp_path / "release"
    monkeypatch.setenv(_fault.ENV, f"{spec}:{release}")
    monkeypatch.setattr(_fault, "HOLD_LIMIT_S", 0.2)
    _fault.after_checkpoint(6, world, resumes, rank=0)
    assert (tmp_path / "release.ready").exists() is holds
    if holds:
        assert (tmp_path / "release.ready").read_text() == "6"


def test_a_released_hold_does_not_hold_again_and_specs_combine(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.touch()
    monkeypatch.setenv(_fault.ENV, f"hold:2:{first};hold-shrunk:{second}")
    monkeypatch.setattr(_fault, "HOLD_LIMIT_S", 0.2)
    _fault.after_checkpoint(3, 2, [], rank=0)
    assert not (tmp_path / "a.ready").exists()
    _fault.after_checkpoint(6, 1, SHRUNK, rank=1)  # only rank 0 announces the hold
    assert not (tmp_path / "b.ready").exists()


def test_an_unknown_action_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(_fault.ENV, f"pause:{tmp_path}/x")
    with pytest.raises(ValueError, match="unknown action 'pause'"):
        _fault.after_checkpoint(1, 1, [], 0)
