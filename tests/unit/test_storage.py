"""One storage API over local paths and a real S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import logging

import pytest

from rayloom import storage


def _roundtrip(base: str, tmp_path):
    storage.write_text(storage.join(base, "a", "hello.txt"), "hi")
    storage.write_bytes(storage.join(base, "a", "b", "blob.bin"), b"\x00\x01")
    assert storage.read_text(storage.join(base, "a", "hello.txt")) == "hi"
    assert storage.read_bytes(storage.join(base, "a", "b", "blob.bin")) == b"\x00\x01"
    assert storage.exists(storage.join(base, "a", "hello.txt"))
    assert not storage.exists(storage.join(base, "a", "missing.txt"))
    assert storage.list_files(storage.join(base, "a")) == ["b/blob.bin", "hello.txt"]

    local = tmp_path / "ckpt"
    (local / "sub").mkdir(parents=True)
    (local / "weights.bin").write_bytes(b"w" * 1000)
    (local / "sub" / "meta.json").write_text("{}")
    dest = storage.join(base, "checkpoints", "step-1")
    assert not storage.is_committed(dest)
    storage.commit_dir(local, dest)
    assert storage.is_committed(dest)
    assert storage.list_files(dest) == [storage.COMMIT_MARKER, "sub/meta.json", "weights.bin"]
    back = storage.download_dir(dest, tmp_path / "back")
    assert (back / "weights.bin").read_bytes() == b"w" * 1000
    storage.remove(dest)
    assert not storage.is_committed(dest)


def test_local_roundtrip(tmp_path):
    _roundtrip(str(tmp_path / "root"), tmp_path)


def test_s3_roundtrip(s3_server, tmp_path):
    _roundtrip(f"s3://{s3_server['bucket']}/runs", tmp_path)


def test_s3_is_readable_by_boto3_too(s3_server):
    import boto3

    storage.write_text(f"s3://{s3_server['bucket']}/x/y.txt", "from pyarrow")
    body = boto3.client("s3").get_object(Bucket=s3_server["bucket"], Key="x/y.txt")["Body"].read()
    assert body == b"from pyarrow"


def test_local_commit_replaces_atomically(tmp_path):
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir()
    second.mkdir()
    (first / "f").write_text("1")
    (second / "f").write_text("2")
    dest = tmp_path / "out"
    storage.commit_dir(first, dest)
    storage.commit_dir(second, dest)
    assert (dest / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v1", "v2"], "no staging/old dirs left behind"


def test_credentials_are_never_logged(s3_server, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    storage.write_text(f"s3://{s3_server['bucket']}/z.txt", "z")
    storage.commit_dir(tmp_path, f"s3://{s3_server['bucket']}/committed")
    assert "testing-secret" not in caplog.text


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.read_text(tmp_path / "nope.txt")
