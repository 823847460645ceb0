"""Local paths and s3:// URIs behind one small API.

Built on `pyarrow.fs` because Ray Data reads and writes through the same filesystem objects, so
shards, checkpoints and models share one code path. S3 credentials come only from the
environment / AWS config (pyarrow's default chain); an S3-compatible endpoint comes from
AWS_ENDPOINT_URL. Nothing here logs credentials.

A directory is *committed* when its `_COMMITTED` marker exists; the marker is written last, so
readers never see a half-written checkpoint or shard set, on S3 (no atomic rename) or locally.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse

COMMIT_MARKER = "_COMMITTED"


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(base: str | os.PathLike, *parts: str) -> str:
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def s3_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def filesystem(uri: str | os.PathLike):
    """(pyarrow FileSystem, path inside it) for a local path or an s3:// URI."""
    from pyarrow import fs as pafs

    uri = str(uri)
    if not is_s3(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    parsed = urlparse(uri)
    kwargs: dict = {}
    endpoint = s3_endpoint()
    if endpoint:
        url = urlparse(endpoint)
        kwargs["endpoint_override"] = url.netloc
        kwargs["scheme"] = url.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")


def exists(uri: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return True
    # S3 has no directories: a prefix with objects under it counts.
    return is_s3(uri) and bool(list_files(uri))


def read_bytes(uri: str | os.PathLike) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(uri: str | os.PathLike) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    fs, path = filesystem(uri)
    if not is_s3(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a reader never sees a partial local file.
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(uri: str | os.PathLike, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Relative paths of the files under a directory/prefix, sorted."""
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    out = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            out.append(os.path.relpath(info.path, path) if not is_s3(uri) else info.path[len(path) + 1:])
    return sorted(out)


def remove(uri: str | os.PathLike) -> None:
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory or is_s3(uri):
        with suppress(FileNotFoundError, OSError):
            fs.delete_dir(path)


def upload_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Copy every file of a local directory to a local or S3 destination."""
    from pyarrow import fs as pafs

    dest_fs, dest = filesystem(uri)
    pafs.copy_files(str(Path(local_dir).resolve()), dest, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=dest_fs, use_threads=True)


def download_dir(uri: str | os.PathLike, local_dir: str | os.PathLike) -> Path:
    from pyarrow import fs as pafs

    src_fs, src = filesystem(uri)
    local = Path(local_dir)
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(src, str(local.resolve()), source_filesystem=src_fs,
                    destination_filesystem=pafs.LocalFileSystem(), use_threads=True)
    return local


def commit_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Publish a finished local directory at `uri`, atomically for readers.

    Local: copy into a temporary sibling, add the marker, then rename into place (replacing an
    older version). S3: upload every file, then write the marker last.
    """
    uri = str(uri)
    if is_s3(uri):
        remove(join(uri, COMMIT_MARKER))
        upload_dir(local_dir, uri)
        write_text(join(uri, COMMIT_MARKER), "ok\n")
        return uri
    dest = Path(uri).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        shutil.copytree(local_dir, staging, dirs_exist_ok=True)
        (staging / COMMIT_MARKER).write_text("ok\n")
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(dest)


def is_committed(uri: str | os.PathLike) -> bool:
    return exists(join(str(uri), COMMIT_MARKER))


@contextmanager
def local_copy(uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A local directory with the contents of `uri` (the path itself when it is local)."""
    if not is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        yield download_dir(uri, tmp)
