"""A commit that is killed, raced by a reader, or raced by a second writer never corrupts an artifact."""

from __future__ import annotations

import signal

import pytest

from rayloom import storage

pytestmark = pytest.mark.reliability

OLD = {"config.json": "old", "model-1.bin": "o" * 100, "model-2.bin": "o" * 200}
NEW = {"config.json": "new", "model.bin": "n" * 300, "tokenizer.json": "t", "extra/a.txt": "a", "extra/b.txt": "b"}


def test_a_writer_killed_mid_commit_leaves_the_previous_version(rel, tmp_path, dest):
    storage.commit_dir(rel.tree(tmp_path / "old", OLD), dest)
    before = storage.read_commit(dest).version
    code, err = rel.Writer(rel.tree(tmp_path / "new", NEW), dest, fault="kill:3").wait()
    assert code == -signal.SIGKILL, err
    assert rel.read_all(dest) == OLD and storage.read_commit(dest).version == before
    storage.verify_committed(dest)
    assert "gone" in storage.lease_status(dest).stale_reason(), "the dead writer's lease is detectably stale"
    # The next writer takes over the dead writer's lease and removes its half-written version.
    storage.commit_dir(tmp_path / "new", dest)
    assert rel.read_all(dest) == NEW
    assert rel.stored_versions(dest) == {storage.read_commit(dest).version, before}
    assert storage.lease_status(dest) is None


def test_a_reader_during_a_commit_reads_one_consistent_version(rel, tmp_path, dest):
    storage.commit_dir(rel.tree(tmp_path / "old", OLD), dest)
    pinned = storage.resolve_committed(dest)
    writer = rel.PausedWriter(rel.tree(tmp_path / "new", NEW), dest, go=tmp_path / "go", after=3)
    assert rel.read_all(dest) == OLD, "mid-commit, readers still see the whole previous version"
    assert storage.list_files(dest) == sorted([storage.COMMIT_MARKER, *OLD])
    writer.resume()
    code, err = writer.wait()
    assert code == 0, err
    assert {f: storage.read_text(storage.join(pinned, f)) for f in OLD} == OLD, "a pinned reader keeps its version"
    assert rel.read_all(dest) == NEW
    assert storage.list_files(dest) == sorted([storage.COMMIT_MARKER, *NEW])


def test_two_concurrent_writers_one_wins_the_other_gets_the_error(rel, tmp_path, dest):
    storage.commit_dir(rel.tree(tmp_path / "old", OLD), dest)
    first = rel.PausedWriter(rel.tree(tmp_path / "a", NEW), dest, go=tmp_path / "go", after=2)
    other = rel.tree(tmp_path / "b", {"config.json": "b", "b.bin": "b"})
    with pytest.raises(storage.LeaseHeld, match="another writer is writing"):
        storage.commit_dir(other, dest)
    code, err = rel.Writer(other, dest).wait()
    assert code == 1 and "another writer is writing" in err
    first.resume()
    code, err = first.wait()
    assert code == 0, err
    assert rel.read_all(dest) == NEW, "the winner's files, nothing of the loser's"
    storage.commit_dir(other, dest)  # once the winner is done, the next writer goes through
    assert rel.read_all(dest) == {"config.json": "b", "b.bin": "b"}


def test_a_foreign_destination_survives_a_killed_overwrite_attempt(rel, tmp_path):
    user = rel.tree(tmp_path / "user", {"thesis.tex": "keep", "data/x.csv": "1"})
    code, err = rel.Writer(rel.tree(tmp_path / "new", NEW), str(user)).wait()
    assert code == 1 and "not written by rayloom" in err
    assert sorted(p.name for p in user.iterdir()) == ["data", "thesis.tex"]
    assert (user / "thesis.tex").read_text() == "keep"
