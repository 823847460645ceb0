"""Reading: plain reads that also find files of versioned S3 artifacts, and verified local caches.

Locally a committed artifact's URI is a symlink to its current version, so every reader (storage,
transformers, vLLM, Ray Data) sees that version's files at the URI. On S3 the files live under
`<uri>/v-<id>/`; storage's own readers follow the pointer when a path under the URI is not found
directly. Other readers (Ray Data, Ray Serve LLM) must be given `resolve_committed(uri)`, which also
pins one version for a whole read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

from rayloom.errors import UserError
from rayloom.storage._io import (
    copy_file,
    download_dir_raw,
    exists_raw,
    file_sizes_raw,
    filesystem,
    is_s3,
    join,
    read_bytes_raw,
    remove_raw,
)
from rayloom.storage._marker import (
    COMMIT_MARKER,
    LEASE_OBJECT,
    CommitInfo,
    not_committed_error,
    read_commit,
    versions_dir,
)
from rayloom.storage._s3 import s3_errors

log = logging.getLogger(__name__)

_MAX_DEPTH = 12


def _through_pointer(uri: str) -> str | None:
    """The path inside the current version of the versioned S3 artifact that contains `uri`."""
    if not is_s3(uri):
        return None
    uri = uri.rstrip("/")
    head, _, rest = uri[len("s3://"):].partition("/")
    parts = rest.split("/") if rest else []
    if not parts or parts[-1] in (COMMIT_MARKER, LEASE_OBJECT):
        return None
    for depth in range(len(parts) - 1, max(0, len(parts) - 1 - _MAX_DEPTH), -1):
        ancestor = "s3://" + "/".join([head, *parts[:depth]])
        info = read_commit(ancestor)
        if info is not None:
            if info.legacy or info.path == ancestor:
                return None
            return join(info.path, *parts[depth:])
    return None


def exists(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    if exists_raw(uri):
        return True
    mapped = _through_pointer(uri)
    return mapped is not None and exists_raw(mapped)


def is_dir(uri: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs  # pyarrow is heavy; imported on first file operation

    with s3_errors(str(uri), "lookup"):
        fs, path = filesystem(uri)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            return True
    # S3 has no directories: a prefix with objects under it counts.
    return is_s3(uri) and bool(list_files(uri))


def read_bytes(uri: str | os.PathLike) -> bytes:
    uri = str(uri)
    try:
        return read_bytes_raw(uri)
    except FileNotFoundError:
        mapped = _through_pointer(uri)
        if mapped is None:
            raise
        return read_bytes_raw(mapped)


def read_text(uri: str | os.PathLike) -> str:
    return read_bytes(uri).decode("utf-8")


def _committed_listing(info: CommitInfo, recursive: bool) -> list[str]:
    names = [COMMIT_MARKER, *(info.files or {})]
    return sorted(n for n in names if recursive or "/" not in n)


def list_files(uri: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Relative paths of the files under a directory/prefix, sorted (a versioned S3 artifact: its
    current version's files and its marker)."""
    uri = str(uri)
    if is_s3(uri):
        info = read_commit(uri)
        if info is not None and not info.legacy and info.path != uri.rstrip("/"):
            return _committed_listing(info, recursive)
    found = list(file_sizes_raw(uri, recursive))
    if not found:
        mapped = _through_pointer(uri)
        if mapped is not None:
            return list(file_sizes_raw(mapped, recursive))
    return found


def download_dir(uri: str | os.PathLike, local_dir: str | os.PathLike) -> Path:
    """Copy a directory/prefix to a local directory (a committed artifact: its current version)."""
    uri = str(uri)
    if is_s3(uri):
        info = read_commit(uri)
        if info is not None:
            return download_dir_raw(info.path, local_dir)
        if not file_sizes_raw(uri):
            mapped = _through_pointer(uri)
            if mapped is not None:
                return download_dir_raw(mapped, local_dir)
    return download_dir_raw(uri, local_dir)


@contextmanager
def local_copy(uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A local directory with the contents of `uri` (the path itself when it is local)."""
    if not is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        yield download_dir(uri, tmp)


def remove(uri: str | os.PathLike) -> None:
    """Delete a file, a directory/prefix, or a committed artifact with all its versions."""
    uri = str(uri)
    if not is_s3(uri) and os.path.islink(uri):
        folder = versions_dir(uri)
        if os.path.dirname(os.path.realpath(uri)) == os.path.realpath(folder):
            os.unlink(uri)
            shutil.rmtree(folder, ignore_errors=True)
            return
    remove_raw(uri)


def _legacy_files(uri: str) -> dict[str, int]:
    return {r: s for r, s in file_sizes_raw(uri).items() if r not in (COMMIT_MARKER, LEASE_OBJECT)}


def _verified(folder: Path, files: dict[str, int]) -> bool:
    if not (folder / COMMIT_MARKER).is_file():
        return False
    for rel, size in files.items():
        try:
            if (folder / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def download_committed(uri: str | os.PathLike, cache_dir: str | os.PathLike, *,
                       only: Iterable[str] | None = None, what: str = "") -> Path:
    """A verified local copy of the current committed version of `uri` (local URIs: the version itself).

    The cache is keyed by URI and version, entries appear by an atomic rename after every file's
    size was checked, and are re-checked on reuse, so a partial download is never used. `only`
    limits the copy to those relative paths (those that exist in the version).
    """
    uri = str(uri).rstrip("/")
    info = read_commit(uri)
    if info is None:
        raise not_committed_error(uri, what)
    if not is_s3(uri):
        return Path(info.path)
    files = info.files if not info.legacy else _legacy_files(uri)
    version = info.version if not info.legacy else "legacy-" + hashlib.sha256(
        json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    if only is not None:
        wanted = set(only)
        files = {r: s for r, s in files.items() if r in wanted}
        version += "-" + hashlib.sha256(json.dumps(sorted(wanted)).encode()).hexdigest()[:8]
    target = Path(cache_dir).expanduser() / f"s3-{hashlib.sha256(uri.encode()).hexdigest()[:12]}" / version
    if _verified(target, files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (version %s, %d files) into %s", uri, version, len(files), target)
    staging = target.parent / f".{version}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for job in [pool.submit(copy_file, join(info.path, rel), str(staging / rel)) for rel in files]:
                job.result()
        (staging / COMMIT_MARKER).write_text(info.marker_text() if not info.legacy else "ok\n")
        if not _verified(staging, files):
            raise UserError(f"downloading {uri} (version {version}) gave files of the wrong size; nothing "
                            "was cached. Retry; if it persists the stored artifact is damaged.")
        try:
            os.rename(staging, target)
        except OSError:
            if _verified(target, files):  # another process finished the same download first
                return target
            broken = target.parent / f".{version}.broken-{uuid.uuid4().hex[:8]}"
            os.rename(target, broken)
            shutil.rmtree(broken, ignore_errors=True)
            os.rename(staging, target)
    finally:
        with suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return target


def verify_committed(uri: str | os.PathLike) -> CommitInfo:
    """Check that every file the marker of `uri` lists is there with its size; UserError otherwise."""
    info = read_commit(uri)
    if info is None:
        raise not_committed_error(str(uri))
    if info.legacy:
        return info
    present = file_sizes_raw(info.path)
    bad = sorted(r for r, s in (info.files or {}).items() if present.get(r) != s)
    if bad:
        raise UserError(f"{uri} version {info.version} is damaged: {len(bad)} file(s) missing or of the wrong "
                        f"size ({', '.join(bad[:3])}); roll back with `rayloom storage rollback {uri}`")
    return info


__all__ = ["download_committed", "download_dir", "exists", "is_dir", "list_files", "local_copy", "read_bytes",
           "read_text", "remove", "remove_raw", "verify_committed"]
