"""Raw file operations on local paths and s3:// URIs (no commit-marker resolution).

Built on `pyarrow.fs` because Ray Data reads and writes through the same filesystem objects, so
shards, checkpoints and models share one code path.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import posixpath
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from rayloom.storage._s3 import s3_errors, s3_filesystem


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(base: str | os.PathLike, *parts: str) -> str:
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def parent(uri: str) -> str:
    uri = str(uri).rstrip("/")
    if is_s3(uri):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def basename(uri: str) -> str:
    return posixpath.basename(str(uri).rstrip("/")) if is_s3(uri) else os.path.basename(os.path.abspath(uri))


def filesystem(uri: str | os.PathLike):
    """(pyarrow FileSystem, path inside it) for a local path or an s3:// URI."""
    from pyarrow import fs as pafs  # pyarrow is heavy; imported on first file operation

    uri = str(uri)
    if not is_s3(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    from rayloom.storage._s3 import split

    bucket, key = split(uri)
    return s3_filesystem(), f"{bucket}/{key}".rstrip("/")


def exists_raw(uri: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "lookup"):
        fs, path = filesystem(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file_raw(uri: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "lookup"):
        fs, path = filesystem(uri)
        return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes_raw(uri: str | os.PathLike) -> bytes:
    with s3_errors(str(uri), "read"):
        fs, path = filesystem(uri)
        with fs.open_input_stream(path) as stream:
            return stream.read()


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    with s3_errors(str(uri), "write"):
        fs, path = filesystem(uri)
        if not is_s3(uri):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename so a reader never sees a partial local file.
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            return
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def write_text(uri: str | os.PathLike, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def file_sizes_raw(uri: str | os.PathLike, recursive: bool = True) -> dict[str, int]:
    """{relative path: size} of the files under a directory/prefix."""
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "listing"):
        fs, path = filesystem(uri)
        selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
        out = {}
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                rel = os.path.relpath(info.path, path) if not is_s3(uri) else info.path[len(path) + 1:]
                out[rel] = int(info.size)
        return dict(sorted(out.items()))


def remove_raw(uri: str | os.PathLike) -> None:
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "delete"):
        fs, path = filesystem(uri)
        if not is_s3(uri) and os.path.islink(path):
            os.unlink(path)
            return
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)
        elif info.type == pafs.FileType.Directory or is_s3(uri):
            with suppress(FileNotFoundError):
                fs.delete_dir(path)


def remove_file(uri: str | os.PathLike) -> bool:
    """Delete one file (one S3 object); never a directory or prefix. True when something was deleted."""
    from pyarrow import fs as pafs  # see filesystem()

    from rayloom.errors import UserError

    with s3_errors(str(uri), "delete"):
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return False
        if info.type != pafs.FileType.File or (not is_s3(uri) and os.path.islink(path)):
            raise UserError(f"{uri} is not a plain file; refusing to delete it")
        fs.delete_file(path)
        return True


def upload_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Copy every file of a local directory to a local or S3 destination (no marker, no versions)."""
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "upload"):
        dest_fs, dest = filesystem(uri)
        pafs.copy_files(str(Path(local_dir).resolve()), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=dest_fs, use_threads=True)


def download_dir_raw(uri: str | os.PathLike, local_dir: str | os.PathLike) -> Path:
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(str(uri), "download"):
        src_fs, src = filesystem(uri)
        local = Path(local_dir)
        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src, str(local.resolve()), source_filesystem=src_fs,
                        destination_filesystem=pafs.LocalFileSystem(), use_threads=True)
        return local


def copy_file(src: str, dest: str) -> None:
    """Copy one file between any two of local/S3 (pyarrow streams it; multipart on S3)."""
    from pyarrow import fs as pafs  # see filesystem()

    with s3_errors(dest if is_s3(dest) else src, "copy"):
        src_fs, src_path = filesystem(src)
        dest_fs, dest_path = filesystem(dest)
        if not is_s3(dest):
            Path(dest_path).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src_path, dest_path, source_filesystem=src_fs, destination_filesystem=dest_fs,
                        use_threads=False)


# Bytes copied per step of copy_local_file. Each step is handed to the disk at once, so writeback
# runs while the rest is still being copied; 8 MiB keeps syscalls few and the disk queue busy.
_CHUNK = 8 * 2**20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range, do not wait for it


@functools.cache
def _start_writeback() -> Callable[[int, int, int], object] | None:
    """libc's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), None where there is none.

    Python's os module has no sync_file_range; without it dirty pages wait for the final fsync
    (or the kernel's 30 s flusher), so writing to disk only starts after the whole copy is done.
    """
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return lambda fd, offset, count: func(fd, offset, count, _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def copy_local_file(src: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Copy a local file's first st_size bytes, queueing each chunk for writeback as it lands.

    Returns the bytes copied. Not durable yet: the caller fsyncs (fsync_path) before naming the file
    in a manifest; by then most of it is on disk, so the fsync waits for the tail only. The copy is
    in the kernel (sendfile) like shutil.copyfile's, with a read/write fallback where it is refused.
    """
    kick = _start_writeback()
    with open(src, "rb") as fin, open(dest, "wb", buffering=0) as fout:
        src_fd, dest_fd = fin.fileno(), fout.fileno()
        size = os.fstat(src_fd).st_size
        offset, in_kernel = 0, hasattr(os, "sendfile")
        while offset < size:
            count = min(_CHUNK, size - offset)
            sent = -1
            if in_kernel:
                try:
                    sent = os.sendfile(dest_fd, src_fd, offset, count)  # writes at dest's position == offset
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP):
                        raise
                    in_kernel = False  # pwrite from here on: it does not move dest's position
            if sent < 0:
                data = os.pread(src_fd, count, offset)
                _write_all(dest_fd, data, offset)
                sent = len(data)
            if sent == 0:
                break  # the source shrank while copied: the caller's size check refuses to publish it
            if kick is not None:
                kick(dest_fd, offset, sent)  # a failed hint is harmless: fsync still writes it all
            offset += sent
        return offset


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a local file or directory by path (a directory: the names created in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
