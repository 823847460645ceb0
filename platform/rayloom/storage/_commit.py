"""Publishing: atomic, versioned commits that never replace data rayloom did not write.

A commit takes the artifact's lease, checks the destination (absent, empty, or a committed
rayloom artifact of the same kind; anything else only with overwrite=True), writes an immutable
version, lists its files with sizes (checked against what was meant to be written), writes the
version's manifest, then switches the pointer (S3: `<uri>/_COMMITTED`, a conditional put; local:
an atomic symlink rename) and prunes versions beyond keep_versions. Layout: see _marker.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from rayloom.errors import UserError
from rayloom.storage import _fault
from rayloom.storage._io import (
    copy_file,
    file_sizes_raw,
    is_s3,
    join,
    remove_raw,
    write_bytes,
)
from rayloom.storage._lease import LeaseHeld, lease
from rayloom.storage._local_files import copy_into, fsync_dir, make_durable, remove_tree_local
from rayloom.storage._marker import (
    COMMIT_MARKER,
    LEASE_OBJECT,
    VERSION_RE,
    CommitInfo,
    new_version_id,
    not_committed_error,
    parse_marker,
    read_commit,
    version_path,
    versions_dir,
)
from rayloom.storage._paths import check_output_path, is_within
from rayloom.storage._s3 import error_code, s3_client, s3_errors, split

log = logging.getLogger(__name__)

_OVERRIDE = "overwrite=True (`--force`, or `<section>.overwrite=true` in the config)"


def default_keep_versions() -> int:
    """storage.keep_versions as the job exported it (RAYLOOM_KEEP_VERSIONS), else 2."""
    value = os.environ.get("RAYLOOM_KEEP_VERSIONS", "")
    return max(1, int(value)) if value.strip().isdigit() else 2


@dataclass
class _Dest:
    state: str  # "absent" | "empty" | "committed" | "foreign"
    current: CommitInfo | None = None
    current_version: str = ""  # the version id the pointer names now (local: the link's target)
    detail: str = ""
    pointer_etag: str | None = None  # S3: ETag of <uri>/_COMMITTED when there is one


def _classify_local(uri: str) -> _Dest:
    if os.path.islink(uri):
        target = os.path.realpath(uri)
        info = read_commit(uri)
        ours = os.path.dirname(target) == os.path.realpath(versions_dir(uri))
        if info is not None and ours:
            return _Dest("committed", info, current_version=os.path.basename(target))
        if ours and not os.path.exists(target):
            return _Dest("committed")  # our link, its version deleted by hand: nothing left to protect
        return _Dest("foreign", detail=f"a symbolic link to {os.readlink(uri)}")
    if not os.path.lexists(uri):
        return _Dest("absent")
    if not os.path.isdir(uri):
        return _Dest("foreign", detail="a file")
    entries = sorted(os.listdir(uri))
    if not entries:
        return _Dest("empty")
    info = read_commit(uri)
    if info is not None:
        return _Dest("committed", info, current_version="")  # a real directory: a pre-versioning commit
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    return _Dest("foreign", detail=f"a directory holding {shown}")


def _classify_s3(uri: str) -> _Dest:
    bucket, key = split(uri)
    client = s3_client()
    with s3_errors(uri, "lookup"):
        etag = None
        try:
            obj = client.get_object(Bucket=bucket, Key=f"{key}/{COMMIT_MARKER}")
            etag = obj.get("ETag")
            data = parse_marker(obj["Body"].read().decode("utf-8", "replace"))
        except Exception as exc:
            if error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
                raise
            data = None
        if data is not None:
            info = read_commit(uri)
            if info is not None:
                return _Dest("committed", info, current_version=info.version if data else "", pointer_etag=etag)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{key}/", MaxKeys=4).get("Contents", [])
    names = [o["Key"][len(key) + 1:] for o in listed if o["Key"] != f"{key}/{LEASE_OBJECT}"]
    if not names:
        return _Dest("absent", pointer_etag=etag)
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return _Dest("foreign", detail=f"objects {shown}", pointer_etag=etag)


def _classify(uri: str) -> _Dest:
    return _classify_s3(uri) if is_s3(uri) else _classify_local(uri)


def _refuse_if_unsafe(uri: str, dest: _Dest, kind: str | None, overwrite: bool) -> None:
    if overwrite:
        return
    if dest.state == "foreign":
        aside = ("it would be moved aside, never deleted" if not is_s3(uri)
                 else "the existing objects would stay, ignored by readers")
        raise UserError(f"{uri} already exists and was not written by rayloom ({dest.detail}); refusing to "
                        f"replace it. Write to another path, or pass {_OVERRIDE} ({aside}).")
    current = dest.current
    if current is not None and kind and current.kind and current.kind != kind:
        raise UserError(f"{uri} holds a committed rayloom {current.kind!r} artifact, not a {kind!r}; refusing "
                        f"to replace it. Write to another path, or pass {_OVERRIDE}.")


def check_writable(uri: str | os.PathLike, *, kind: str | None = None, overwrite: bool = False) -> None:
    """Raise the UserError a commit to `uri` would raise, before a job spends time building it."""
    key = _norm(uri)
    _refuse_if_unsafe(key, _classify(key), kind, overwrite)


def _norm(uri: str | os.PathLike) -> str:
    return str(uri).rstrip("/") if is_s3(uri) else os.path.abspath(os.path.expanduser(str(uri)))


@dataclass(frozen=True)
class PendingVersion:
    """A version being written: put its files under `path`; it is published when the block ends."""

    uri: str
    version: str
    path: str
    kind: str | None


@contextmanager
def new_version(uri: str | os.PathLike, *, kind: str | None = None, overwrite: bool = False,
                keep_versions: int | None = None, expected: dict[str, int] | None = None
                ) -> Iterator[PendingVersion]:
    """Write a new version of `uri` in place (e.g. Ray Data or Ray Train writing straight to S3).

    Holds the lease for the block; on success the version is published (manifest, then pointer);
    on an exception it is deleted and the previous version stays current.
    """
    key = _norm(uri)
    keep = keep_versions or default_keep_versions()
    with lease(key):
        dest = _classify(key)
        _refuse_if_unsafe(key, dest, kind, overwrite)
        version = new_version_id()
        pending = PendingVersion(key, version, version_path(key, version), kind)
        if not is_s3(key):
            os.makedirs(pending.path)
        try:
            yield pending
            _publish(pending, dest, keep, expected)
        except BaseException:
            with suppress(Exception):
                if not read_commit(key) or read_commit(key).version != version:
                    remove_raw(pending.path)
            raise


def _publish(pending: PendingVersion, dest: _Dest, keep: int, expected: dict[str, int] | None) -> None:
    uri = pending.uri
    files = {rel: size for rel, size in file_sizes_raw(pending.path).items() if rel != COMMIT_MARKER}
    if expected is not None and files != expected:
        missing = sorted(set(expected) - set(files))[:3]
        wrong = sorted(r for r in set(expected) & set(files) if expected[r] != files[r])[:3]
        raise UserError(f"the new version of {uri} is incomplete (missing {missing}, wrong size {wrong}); "
                        "nothing was published, the previous version is still current")
    legacy_id = ""
    history: list[str] = []
    if dest.state == "committed" and dest.current is not None:
        if dest.current_version:
            history = [dest.current_version, *(dest.current.history if not dest.current.legacy else ())]
        elif not is_s3(uri):
            legacy_id = new_version_id()  # the pre-versioning directory becomes a kept version
            history = [legacy_id]
    history = [h for h in history if VERSION_RE.match(h)][: keep - 1]
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not is_s3(uri):
        # Whoever wrote the files (commit_dir's copies, Ray tasks writing data shards), they are on
        # disk before the manifest names them: a power loss must not publish a truncated file.
        make_durable(pending.path, list(files))
    info = CommitInfo(uri=uri, path=pending.path, version=pending.version, kind=pending.kind, files=files,
                      history=tuple(history), created=created)
    write_bytes(join(pending.path, COMMIT_MARKER), info.marker_text().encode())
    if is_s3(uri):
        _switch_s3(uri, info, dest)
    else:
        fsync_dir(pending.path)  # the names of its files and of the manifest, before the pointer names them
        _switch_local(uri, pending.path, dest, legacy_id)
    _prune(uri, {pending.version, *history})
    log.info("committed %s version %s (%d files)", uri, pending.version, len(files))


def _switch_s3(uri: str, info: CommitInfo, dest: _Dest) -> None:
    from rayloom.storage._lease import _put_s3

    pointer = join(uri, COMMIT_MARKER)
    body = info.marker_text().encode()
    ok = (_put_s3(pointer, body, if_match=dest.pointer_etag) if dest.pointer_etag
          else _put_s3(pointer, body, if_none_match=True))
    if not ok:
        raise LeaseHeld(f"the pointer of {uri} changed while this commit held its lease (a writer that ignored "
                        "the lease?); nothing was published by this commit")


def _switch_local(uri: str, version_dir: str, dest: _Dest, legacy_id: str) -> None:
    parent = os.path.dirname(uri)
    link = os.path.join(parent, f".{os.path.basename(uri)}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(os.path.relpath(version_dir, parent), link)
    try:
        if dest.state == "empty":
            os.rmdir(uri)
        elif dest.state == "committed" and legacy_id:
            os.rename(uri, version_path(uri, legacy_id))
        elif dest.state == "foreign" and os.path.lexists(uri):
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            aside = os.path.join(parent, f".{os.path.basename(uri)}.replaced-{stamp}-{uuid.uuid4().hex[:4]}")
            os.rename(uri, aside)
            log.warning("overwrite: moved the existing %s aside to %s (delete it yourself when unneeded)", uri, aside)
        os.replace(link, uri)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(link)
    fsync_dir(parent)


def _prune(uri: str, keep: set[str]) -> None:
    """Delete this artifact's versions that are not kept: dropped from history, or left by a crashed
    writer. Only names this module creates (v-<time>-<hex>) are touched."""
    if is_s3(uri):
        bucket, key = split(uri)
        with s3_errors(uri, "listing"):
            pages = s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{key}/", Delimiter="/")
            names = [p["Prefix"][len(key) + 1:].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]
        for name in names:
            if VERSION_RE.match(name) and name not in keep:
                remove_raw(join(uri, name))
        return
    folder = versions_dir(uri)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if VERSION_RE.match(name) and name not in keep:
            remove_tree_local(os.path.join(folder, name))
    prefix = f".{os.path.basename(uri)}.link-"
    for name in os.listdir(os.path.dirname(uri)):
        if name.startswith(prefix):
            with suppress(FileNotFoundError):
                os.unlink(os.path.join(os.path.dirname(uri), name))


def _source_files(src: Path) -> dict[str, int]:
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, src)
            if rel != COMMIT_MARKER:
                files[rel] = os.path.getsize(full)
    return dict(sorted(files.items()))


def commit_dir(local_dir: str | os.PathLike, uri: str | os.PathLike, *, kind: str | None = None,
               overwrite: bool = False, keep_versions: int | None = None) -> str:
    """Publish a finished local directory at `uri` as a new immutable version; returns `uri`.

    Refuses (UserError naming the path and the override) an existing `uri` that is neither empty nor
    a committed rayloom artifact of the same `kind`, unless overwrite=True; then a local foreign
    directory is moved aside (never deleted). Another writer of `uri` gets LeaseHeld.
    """
    src = Path(local_dir).resolve()
    if not src.is_dir():
        raise UserError(f"cannot publish {local_dir}: not a directory")
    key = _norm(uri)
    check_output_path(key, inputs=[src], what="commit destination")
    if not is_s3(key) and is_within(key, src):
        raise UserError(f"cannot publish {src} into {key}, a folder inside it")
    files = _source_files(src)
    with new_version(key, kind=kind, overwrite=overwrite, keep_versions=keep_versions, expected=files) as pending:
        workers = 1 if _fault.active() or not is_s3(key) else 8
        done = 0
        with ThreadPoolExecutor(max_workers=workers) as pool:
            if is_s3(key):
                jobs = [pool.submit(copy_file, str(src / rel), join(pending.path, rel.replace(os.sep, "/")))
                        for rel in files]
            else:
                jobs = [pool.submit(copy_into, src, rel, pending.path) for rel in files]
            for job in jobs:
                job.result()
                done += 1
                _fault.after_file(done)
    return key   # (new_version's publish made the copies durable before naming them)


def rollback(uri: str | os.PathLike, to_version: str | None = None) -> CommitInfo:
    """Make an older kept version current again (default: the one before the current one).

    The suggested command: `rayloom storage rollback <uri> [--to v-...]`.
    """
    key = _norm(uri)
    with lease(key):
        current = read_commit(key)
        if current is None:
            raise not_committed_error(key)
        dest = _classify(key)
        history = list(current.history)
        target = to_version or (history[0] if history else "")
        if not target:
            raise UserError(f"{key} keeps no older version to roll back to (storage.keep_versions)")
        if target not in history:
            raise UserError(f"{key} has no kept version {target!r}; kept: {', '.join(history) or 'none'}")
        older = read_commit(version_path(key, target))
        if older is None:
            raise UserError(f"version {target} of {key} is gone or incomplete; kept: {', '.join(history)}")
        if is_s3(key):
            info = CommitInfo(uri=key, path=older.path, version=target, kind=older.kind, files=older.files,
                              history=older.history, created=older.created)
            _switch_s3(key, info, dest)
        else:
            _switch_local(key, older.path, dest, "")
        log.warning("rolled %s back from %s to %s", key, current.version, target)
        return read_commit(key)


def list_versions(uri: str | os.PathLike) -> list[CommitInfo]:
    """The current version of `uri` and the older ones kept for rollback, newest first."""
    key = _norm(uri)
    current = read_commit(key)
    if current is None:
        return []
    out = [current]
    for version in current.history:
        older = read_commit(version_path(key, version))
        if older is not None:
            out.append(older)
    return out
