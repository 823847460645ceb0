"""`rayloom storage versions|rollback|unlock` on real local disk, through the real CLI entry point."""

from __future__ import annotations

from rayloom import storage
from rayloom.cli import main


def _commit(tmp_path, name: str, text: str, dest) -> None:
    src = tmp_path / name
    src.mkdir()
    (src / "weights.bin").write_text(text)
    storage.commit_dir(src, dest, kind="model")


def test_versions_then_rollback_returns_the_previous_files(tmp_path, capsys):
    dest = tmp_path / "models" / "m"
    _commit(tmp_path, "a", "first", dest)
    _commit(tmp_path, "b", "second", dest)
    assert main(["storage", "versions", str(dest)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "current" in out[0] and "kept" in out[1]
    assert main(["storage", "rollback", str(dest)]) == 0
    assert (dest / "weights.bin").read_text() == "first"


def test_rollback_without_an_older_version_is_a_user_error(tmp_path, capsys):
    dest = tmp_path / "m"
    _commit(tmp_path, "a", "only", dest)
    assert main(["storage", "rollback", str(dest)]) == 2
    assert "no older version" in capsys.readouterr().err


def test_unlock_refuses_a_live_lease_and_removes_it_with_force(tmp_path, capsys):
    dest = str(tmp_path / "run")
    with storage.lease(dest):
        assert main(["storage", "unlock", dest]) == 2
        assert "live" in capsys.readouterr().err
        assert main(["storage", "unlock", dest, "--force"]) == 0
    assert storage.lease_status(dest) is None
