"""One storage API over local paths and a real S3-compatible server on 127.0.0.1.

Safety rules of docs/storage.md: foreign data is never replaced without overwrite=True (and then
moved aside locally, not deleted), commits are versioned with a pointer written last, one writer
per artifact, names and outputs that would escape their folder are refused.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from rayloom import storage
from rayloom.errors import UserError


def _tree(path, files: dict[str, str]):
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return path


def _read_all(uri: str) -> dict[str, str]:
    """Every file of the committed version `uri` names, read from one resolved version."""
    info = storage.read_commit(uri)
    assert info is not None, f"{uri} is not committed"
    return {rel: storage.read_text(storage.join(info.path, rel)) for rel in info.files}


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3['bucket']}/{request.node.name.replace('[', '-').rstrip(']')}"


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
    # Plain reads under the artifact's URI reach its current version (locally through the link,
    # on S3 through the pointer).
    assert storage.read_text(storage.join(dest, "sub", "meta.json")) == "{}"
    assert storage.exists(storage.join(dest, "weights.bin"))
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
    first = _tree(tmp_path / "v1", {"f": "1"})
    second = _tree(tmp_path / "v2", {"f": "2"})
    dest = tmp_path / "out"
    storage.commit_dir(first, dest)
    storage.commit_dir(second, dest)
    assert (dest / "f").read_text() == "2"
    # The artifact is a link to its current version plus the hidden folder of kept versions;
    # no staging, link or lease files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.versions", "out", "v1", "v2"]
    assert dest.is_symlink() and len(os.listdir(tmp_path / ".out.versions")) == 2


def test_local_commit_copies_in_chunks_and_makes_every_file_and_folder_durable(tmp_path, monkeypatch):
    from rayloom.storage import _io, _local_files

    monkeypatch.setattr(_io, "_CHUNK", 1000)  # several chunks, each queued for writeback
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    blobs = {"a.bin": os.urandom(2500), "empty": b"", "sub/b.bin": os.urandom(1000),
             "sub/deeper/c.bin": os.urandom(7)}
    for rel, data in blobs.items():
        (src / rel).write_bytes(data)
    synced = []
    monkeypatch.setattr(_local_files, "fsync_path", lambda path: synced.append(os.path.relpath(path, tmp_path)))
    storage.commit_dir(src, tmp_path / "out")
    info = storage.read_commit(str(tmp_path / "out"))
    assert {rel: (tmp_path / "out" / rel).read_bytes() for rel in blobs} == blobs
    version = os.path.relpath(info.path, tmp_path)
    # Every file, then its folders deepest first, then the version folder after its manifest;
    # only then is the pointer (the parent folder) synced.
    assert synced == [os.path.join(version, rel) for rel in info.files] + [
        os.path.join(version, "sub", "deeper"), os.path.join(version, "sub"), version, "."]


def test_files_a_writer_put_into_a_new_version_are_durable_before_the_pointer(tmp_path, monkeypatch):
    """new_version's own writers (Ray tasks writing data shards) get the same guarantee as commit_dir:
    every file and folder synced before the manifest, the manifest's folder before the pointer."""
    from rayloom.storage import _local_files

    synced = []
    monkeypatch.setattr(_local_files, "fsync_path", lambda path: synced.append(os.path.relpath(path, tmp_path)))
    with storage.new_version(str(tmp_path / "out")) as pending:
        os.makedirs(os.path.join(pending.path, "train"))
        for rel in ("train/part-0.parquet", "manifest.json"):
            with open(os.path.join(pending.path, rel), "wb") as f:
                f.write(b"x" * 10)
    info = storage.read_commit(str(tmp_path / "out"))
    version = os.path.relpath(info.path, tmp_path)
    assert synced == [os.path.join(version, rel) for rel in info.files] + [
        os.path.join(version, "train"), version, "."]


def test_local_copy_falls_back_to_read_write_where_sendfile_is_refused(tmp_path, monkeypatch):
    from rayloom.storage import _io

    monkeypatch.setattr(_io, "_CHUNK", 1000)
    data = os.urandom(3500)
    (tmp_path / "src").write_bytes(data)
    calls, real_sendfile = [], os.sendfile

    def sendfile_once(out_fd, in_fd, offset, count):  # the first chunk in the kernel, then refused
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.EINVAL, "refused")
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(_io.os, "sendfile", sendfile_once)
    assert _io.copy_local_file(tmp_path / "src", tmp_path / "dest") == len(data)
    assert (tmp_path / "dest").read_bytes() == data and calls == [0, 1000]


def test_pruning_deletes_now_and_closes_the_handles_it_held(tmp_path, monkeypatch):
    import threading

    from rayloom.storage import _local_files

    monkeypatch.setattr(_local_files, "HOLD_BYTES", 1)  # every non-empty file takes the held-handle path
    fds_before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    dest = tmp_path / "out"
    for n in range(3):
        storage.commit_dir(_tree(tmp_path / f"s{n}", {"w.bin": str(n) * 100, "sub/x": "x"}), dest, keep_versions=1)
    assert len(os.listdir(tmp_path / ".out.versions")) == 1 and _read_all(str(dest))["w.bin"] == "2" * 100
    for thread in threading.enumerate():
        if thread.name == "rayloom-prune":
            thread.join(timeout=10)
    if fds_before:
        assert set(os.listdir("/proc/self/fd")) <= fds_before, "the held handles are closed"


def test_credentials_are_never_logged(s3_server, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    storage.write_text(f"s3://{s3_server['bucket']}/z.txt", "z")
    storage.commit_dir(_tree(tmp_path / "src", {"f": "x"}), f"s3://{s3_server['bucket']}/committed")
    assert "testing-secret" not in caplog.text


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.read_text(tmp_path / "nope.txt")


# --- never replace what rayloom did not write ---

def test_commit_refuses_to_replace_a_foreign_directory(tmp_path):
    src = _tree(tmp_path / "src", {"f": "new"})
    user = _tree(tmp_path / "user", {"thesis.tex": "keep"})
    with pytest.raises(UserError) as err:
        storage.commit_dir(src, user)
    assert str(user) in str(err.value) and "overwrite=True" in str(err.value) and "--force" in str(err.value)
    assert sorted(os.listdir(user)) == ["thesis.tex"] and (user / "thesis.tex").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "user"], "nothing left beside it"


def test_s3_commit_refuses_a_foreign_prefix(s3_server, tmp_path):
    uri = f"s3://{s3_server['bucket']}/foreign"
    storage.write_text(f"{uri}/index.html", "<html>")
    with pytest.raises(UserError, match="not written by rayloom"):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "new"}), uri)
    assert storage.list_files(uri) == ["index.html"]


def test_a_foreign_folder_with_a_manifest_is_not_replaceable(tmp_path, base):
    storage.write_text(storage.join(base, "site", "manifest.json"), '{"name": "webapp"}')
    storage.write_text(storage.join(base, "site", "index.html"), "")
    with pytest.raises(UserError):
        storage.check_writable(storage.join(base, "site"))
    with pytest.raises(UserError):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "1"}), storage.join(base, "site"))
    assert storage.read_text(storage.join(base, "site", "manifest.json")) == '{"name": "webapp"}'


def test_a_foreign_commit_marker_does_not_make_a_folder_replaceable(tmp_path):
    user = _tree(tmp_path / "user", {"_COMMITTED": "my own notes", "data.csv": "1,2"})
    with pytest.raises(UserError):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "1"}), user)
    assert (user / "data.csv").read_text() == "1,2"


def test_an_empty_directory_and_a_pre_versioning_commit_may_be_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    storage.commit_dir(_tree(tmp_path / "src", {"f": "new"}), empty)
    assert _read_all(str(empty)) == {"f": "new"}
    legacy = _tree(tmp_path / "legacy", {"old.bin": "old", "_COMMITTED": "ok\n"})
    storage.commit_dir(tmp_path / "src", legacy)
    assert sorted(os.listdir(legacy)) == ["_COMMITTED", "f"]
    # The old directory became a kept version: it can be rolled back to.
    storage.rollback(legacy)
    assert sorted(os.listdir(legacy)) == ["_COMMITTED", "old.bin"]


def test_overwrite_moves_a_foreign_directory_aside_and_never_deletes_it(tmp_path, caplog):
    user = _tree(tmp_path / "user", {"thesis.tex": "keep"})
    storage.commit_dir(_tree(tmp_path / "src", {"f": "new"}), user, overwrite=True)
    assert _read_all(str(user)) == {"f": "new"}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".user.replaced-")]
    assert len(aside) == 1 and (aside[0] / "thesis.tex").read_text() == "keep"
    assert "moved the existing" in caplog.text


def test_a_committed_artifact_of_another_kind_is_not_replaced(tmp_path, base):
    dest = storage.join(base, "thing")
    storage.commit_dir(_tree(tmp_path / "a", {"m": "model"}), dest, kind="model")
    with pytest.raises(UserError, match="'model' artifact, not a 'dataset'"):
        storage.commit_dir(_tree(tmp_path / "b", {"d": "data"}), dest, kind="dataset")
    assert _read_all(dest) == {"m": "model"}
    storage.commit_dir(tmp_path / "b", dest, kind="model")
    assert _read_all(dest) == {"d": "data"}


def test_commit_refuses_a_destination_that_contains_its_source(tmp_path):
    src = _tree(tmp_path / "work" / "model", {"f": "1"})
    with pytest.raises(UserError, match="input"):
        storage.commit_dir(src, tmp_path / "work")
    with pytest.raises(UserError, match="inside it"):
        storage.commit_dir(src, src / "published")
    assert (src / "f").read_text() == "1"


def test_remove_file_never_deletes_a_directory(tmp_path, base):
    storage.write_text(storage.join(base, "raw", "a.jsonl"), "{}")
    with pytest.raises(UserError, match="not a plain file"):
        storage.remove_file(storage.join(base, "raw"))
    assert storage.read_text(storage.join(base, "raw", "a.jsonl")) == "{}"
    assert storage.remove_file(storage.join(base, "raw", "a.jsonl"))
    assert not storage.remove_file(storage.join(base, "raw", "a.jsonl"))


def _stored_versions(dest: str) -> set[str]:
    if storage.is_s3(dest):
        bucket, _, key = dest[len("s3://"):].partition("/")
        listed = storage.s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{key}/", Delimiter="/")
        return {p["Prefix"][len(key) + 1:].rstrip("/") for p in listed.get("CommonPrefixes", [])}
    return set(os.listdir(os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.versions")))


# --- versions: a pointer written last, readers pinned to one version, rollback ---

def test_recommit_leaves_exactly_the_new_files(tmp_path, base):
    dest = storage.join(base, "model")
    storage.commit_dir(_tree(tmp_path / "a", {"model-1.bin": "1", "model-2.bin": "1", "index.json": "a"}), dest)
    storage.commit_dir(_tree(tmp_path / "b", {"model.bin": "2"}), dest)
    assert _read_all(dest) == {"model.bin": "2"}
    assert storage.list_files(dest) == [storage.COMMIT_MARKER, "model.bin"]
    assert not storage.exists(storage.join(dest, "index.json"))
    info = storage.read_commit(dest)
    assert info.files == {"model.bin": 1} and len(info.history) == 1


def test_a_reader_that_resolved_earlier_keeps_its_version(tmp_path, base):
    dest = storage.join(base, "model")
    storage.commit_dir(_tree(tmp_path / "a", {"w.bin": "old", "cfg": "old"}), dest)
    pinned = storage.resolve_committed(dest)
    storage.commit_dir(_tree(tmp_path / "b", {"w.bin": "new", "cfg": "new"}), dest)
    assert {f: storage.read_text(storage.join(pinned, f)) for f in ("w.bin", "cfg")} == {"w.bin": "old", "cfg": "old"}
    assert _read_all(dest) == {"w.bin": "new", "cfg": "new"}


def test_keep_versions_prunes_and_rollback_restores(tmp_path, base):
    dest = storage.join(base, "model")
    for n in range(4):
        storage.commit_dir(_tree(tmp_path / f"s{n}", {"n": str(n)}), dest, keep_versions=3)
    versions = storage.list_versions(dest)
    assert [_read_all(v.path)["n"] for v in versions] == ["3", "2", "1"]
    assert _stored_versions(dest) == {v.version for v in versions}
    storage.rollback(dest)
    assert _read_all(dest) == {"n": "2"}
    storage.rollback(dest, to_version=versions[2].version)
    assert _read_all(dest) == {"n": "1"}
    with pytest.raises(UserError, match="is gone"):  # v0 was pruned (keep_versions=3)
        storage.rollback(dest)
    storage.commit_dir(tmp_path / "s0", dest)
    assert _read_all(dest) == {"n": "0"}


def test_readers_refuse_an_uncommitted_prefix(tmp_path, base):
    half = storage.join(base, "half")
    storage.write_text(storage.join(half, "config.json"), "{}")
    with pytest.raises(UserError, match="not a committed rayloom artifact"):
        storage.resolve_committed(half)
    with pytest.raises(UserError, match="not a committed rayloom artifact"):
        storage.download_committed(half, tmp_path / "cache")


def test_verify_committed_finds_a_damaged_version(tmp_path):
    dest = tmp_path / "model"
    storage.commit_dir(_tree(tmp_path / "src", {"w.bin": "12345"}), dest)
    storage.verify_committed(dest)
    (dest / "w.bin").write_text("12")
    with pytest.raises(UserError, match="damaged"):
        storage.verify_committed(dest)


def test_download_committed_is_keyed_by_version_and_verified(s3_server, tmp_path):
    uri = f"s3://{s3_server['bucket']}/cached-model"
    cache = tmp_path / "cache"
    storage.commit_dir(_tree(tmp_path / "a", {"config.json": "{}", "w.bin": "first"}), uri)
    first = storage.download_committed(uri, cache)
    assert (first / "w.bin").read_text() == "first" and storage.download_committed(uri, cache) == first
    (first / "w.bin").write_text("par")  # a damaged entry (wrong size) is never reused
    assert (storage.download_committed(uri, cache) / "w.bin").read_text() == "first"
    storage.commit_dir(_tree(tmp_path / "b", {"config.json": "{}", "w.bin": "second!"}), uri)
    second = storage.download_committed(uri, cache)
    assert second != first and (second / "w.bin").read_text() == "second!"
    only = storage.download_committed(uri, cache, only=["config.json", "absent.json"])
    assert sorted(os.listdir(only)) == ["_COMMITTED", "config.json"]


def test_model_loader_reads_s3_models_through_the_marker(s3_server, tiny_model_dir, tiny_config):
    from rayloom.models import resolve_model_dir

    half = f"s3://{s3_server['bucket']}/half-model"
    storage.write_text(f"{half}/config.json", "{}")
    with pytest.raises(UserError, match="not a committed rayloom artifact"):
        resolve_model_dir(dataclasses.replace(tiny_config.model, preset=None, path=half))
    uri = f"s3://{s3_server['bucket']}/models/loader"
    storage.commit_dir(tiny_model_dir, uri, kind="model")
    local = resolve_model_dir(dataclasses.replace(tiny_config.model, preset=None, path=uri))
    assert (local / "config.json").is_file() and storage.read_commit(uri).version == local.name


def test_model_loader_pins_a_local_committed_model(tmp_path, tiny_model_dir, tiny_config):
    from rayloom.models import resolve_model_dir

    dest = tmp_path / "exported"
    storage.commit_dir(tiny_model_dir, dest, kind="model")
    local = resolve_model_dir(dataclasses.replace(tiny_config.model, preset=None, path=str(dest)))
    assert local == tmp_path / ".exported.versions" / storage.read_commit(dest).version


# --- one writer per artifact ---

def test_a_live_lease_refuses_a_second_writer_and_a_dead_one_is_taken_over(tmp_path, base):
    dest = storage.join(base, "leased")
    holder = {"token": "t", "host": "other-host", "pid": 1, "pid_start": "", "created": 1e10}
    where = storage.join(dest, "_LEASE") if storage.is_s3(base) else str(tmp_path / "root" / ".leased.lease")
    storage.write_text(where, json.dumps(holder))
    with pytest.raises(storage.LeaseHeld, match="other-host"):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "1"}), dest)
    with pytest.raises(storage.LeaseHeld, match="live"):
        storage.break_lease(dest)
    assert storage.break_lease(dest, force=True).host == "other-host"
    # A lease whose process is gone on this host is stale and taken over by the next writer.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder.update(host=socket.gethostname(), pid=int(dead.stdout), created=1.0)
    storage.write_text(where, json.dumps(holder))
    assert "gone" in storage.lease_status(dest).stale_reason()
    storage.commit_dir(tmp_path / "src", dest)
    assert _read_all(dest) == {"f": "1"} and storage.lease_status(dest) is None


def test_an_old_lease_is_stale_but_only_broken_on_request(tmp_path, monkeypatch):
    dest = tmp_path / "out"
    holder = {"token": "t", "host": "other-host", "pid": 1, "pid_start": "", "created": 1000.0}
    (tmp_path / ".out.lease").write_text(json.dumps(holder))
    assert "old" in storage.lease_status(dest).stale_reason()
    with pytest.raises(storage.LeaseHeld, match="rayloom storage unlock"):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "1"}), dest)
    assert storage.break_lease(dest) is not None and storage.lease_status(dest) is None


def test_a_lease_is_reentrant_within_one_process(tmp_path):
    dest = tmp_path / "out"
    with storage.lease(dest):
        storage.commit_dir(_tree(tmp_path / "src", {"f": "1"}), dest)
        assert storage.lease_status(dest) is not None
    assert storage.lease_status(dest) is None


# --- S3 errors ---

def test_an_unreachable_s3_server_is_a_clear_user_error(monkeypatch):
    from rayloom.ports import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("RAYLOOM_S3_MAX_ATTEMPTS", "1")
    with pytest.raises(UserError, match=r"S3 read of s3://nowhere/x.txt failed.*attempts"):
        storage.read_text("s3://nowhere/x.txt")
    with pytest.raises(UserError, match="S3 .* failed"):
        storage.lease_status("s3://nowhere/thing")


# --- names and output paths ---

@pytest.mark.parametrize("override", ["train.run_name=..", "train.run_name=.", "train.run_name=.hidden",
                                      "train.run_name=a/b", "data.name=..", "eval.run_name=..",
                                      "serve.app_name=../x", "storage.keep_versions=0"])
def test_names_that_escape_their_folder_fail_at_compose_time(override):
    from rayloom.config import compose

    with pytest.raises(UserError, match=override.split("=")[0].replace(".", r"\.")):
        compose("train", [override])


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\x00b", " pad", "x" * 201])
def test_name_validator_rejects(name):
    from rayloom.config._validate import name_problem

    assert name_problem(name)


@pytest.mark.parametrize("name", ["tiny", "run-1", "my_run.v2", "ünïcode", "a..b"])
def test_name_validator_accepts(name):
    from rayloom.config._validate import name_problem

    assert name_problem(name) == ""


def test_check_output_path(tmp_path):
    root = tmp_path / "runs"
    ckpt = root / "train" / "tiny" / "checkpoint_000010"
    for bad in (root, tmp_path, root / "models" / "..", ckpt, ckpt.parent):
        with pytest.raises(UserError):
            storage.check_output_path(bad, inputs=[ckpt], root=root)
    storage.check_output_path(root / "models" / "tiny", inputs=[ckpt], root=root)
    storage.check_output_path("s3://b/runs/models/x", inputs=[ckpt], root="s3://b/runs")
    with pytest.raises(UserError, match="storage root"):
        storage.check_output_path("s3://b/runs/models/..", root="s3://b/runs")
    with pytest.raises(UserError, match="own input"):
        storage.check_output_path("s3://b/data", inputs=["s3://b/data/raw/"])


def test_a_dangling_link_to_a_deleted_version_may_be_replaced(tmp_path):
    import shutil

    dest = tmp_path / "out"
    storage.commit_dir(_tree(tmp_path / "a", {"f": "1"}), dest)
    shutil.rmtree(tmp_path / ".out.versions")
    assert not storage.is_committed(dest)
    storage.commit_dir(tmp_path / "a", dest)
    assert _read_all(str(dest)) == {"f": "1"}
    other = tmp_path / "elsewhere"
    other.symlink_to(_tree(tmp_path / "b", {"user": "file"}))
    with pytest.raises(UserError, match="symbolic link"):
        storage.commit_dir(tmp_path / "a", other)
    assert (tmp_path / "b" / "user").read_text() == "file"
