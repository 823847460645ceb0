"""Local-disk steps of a commit: durable copies and pruning that does not wait for the disk.

Split from _commit.py (the protocol) because these are about what ext4 and the page cache cost:
measured in bench/bench_storage.py, explained in docs/storage.md ("What it costs").
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import suppress
from pathlib import Path

from rayloom.storage._io import copy_local_file, fsync_path


def fsync_dir(path: str) -> None:
    with suppress(OSError):  # some filesystems refuse fsync on a directory; nothing more can be done there
        fsync_path(path)


# Files at least this big are held open while their names are deleted (at most MAX_HELD of them).
HOLD_BYTES = 2**20
MAX_HELD = 256


def remove_tree_local(path: str) -> None:
    """Delete a folder now, but free its large files' blocks on a background thread.

    Freeing the blocks of a deleted file is what costs (about 15 ms per 50 MB on ext4 here), and
    the kernel does it at the last close, not at unlink. So the big files are opened first, the
    tree is deleted (its names are gone when this returns), and a daemon thread closes the handles.
    If the process exits first, the kernel closes them and frees the blocks all the same.
    """
    held: list[int] = []
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with suppress(OSError):
                if len(held) < MAX_HELD and os.lstat(full).st_size >= HOLD_BYTES:
                    held.append(os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK))
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        if held:
            threading.Thread(target=_close_all, args=(held,), name="rayloom-prune", daemon=True).start()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def copy_into(src: Path, rel: str, dest_dir: str) -> None:
    target = os.path.join(dest_dir, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    copy_local_file(src / rel, target)


def make_durable(dest_dir: str, rels: list[str]) -> None:
    """fsync every copied file, then every folder below `dest_dir` that names one.

    Durable before the manifest names them: a power loss must not publish a truncated file. Done
    after all the copies, not after each: copy_local_file already queued every chunk for writeback,
    so the disk wrote file N while file N+1 was copied, and these fsyncs mostly wait for the tail.
    `dest_dir` itself is synced by _publish, after the manifest joins it.
    """
    folders: set[str] = set()
    for rel in rels:
        target = os.path.join(dest_dir, rel)
        fsync_path(target)
        folder = os.path.dirname(target)
        while len(folder) > len(dest_dir) and folder not in folders:
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first: a folder, then the name of it
        fsync_dir(folder)
