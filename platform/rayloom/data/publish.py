"""Where the job writes, what it may replace, and how shards are published (rayloom.storage commits).

- `check_outputs` runs before any work: data.output and data.quarantine must not be the storage
  root, one of the job's inputs or a folder above one; data.output must be absent, empty or a
  committed rayloom dataset (storage.check_writable: a folder with its own `manifest.json` is not
  ours), unless data.overwrite=true; data.quarantine must be absent or a quarantine file this job
  writes (a `*.quarantine.jsonl` file holding quarantine rows) - never a directory or prefix.
- `shard_destination` is a storage.new_version: Ray Data tasks write the shards straight into an
  immutable version (S3: `<output>/v-<id>/`, local: a hidden versions folder beside the output),
  the manifest goes in last, and the pointer switches when the block ends. A failed job deletes its
  version and leaves the previous dataset current and readable; nothing is deleted up front.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rayloom import storage
from rayloom.errors import UserError

DATASET_KIND = "dataset"
QUARANTINE_SUFFIX = ".quarantine.jsonl"


def check_outputs(output: str, quarantine: str, inputs: list[str], *, root: str | None, overwrite: bool) -> None:
    """Refuse (UserError naming the path and the override) before the job spends any time."""
    storage.check_output_path(output, inputs=inputs, root=root or None, what="data.output")
    storage.check_output_path(quarantine, inputs=inputs, root=root or None, what="data.quarantine")
    if storage.is_within(quarantine, output):
        raise UserError(f"data.quarantine={quarantine!r} is inside data.output={output!r}; the output folder "
                        "holds only the published dataset. Put the quarantine file beside it (the default).")
    storage.check_writable(output, kind=DATASET_KIND, overwrite=overwrite)
    check_quarantine(quarantine, overwrite=overwrite)


def _first_line(uri: str) -> bytes:
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read(65536).split(b"\n", 1)[0]


def is_quarantine_file(uri: str) -> bool:
    """A `*.quarantine.jsonl` plain file that is empty or starts with a quarantine row."""
    if not str(uri).endswith(QUARANTINE_SUFFIX):
        return False
    if not storage.is_s3(uri) and (os.path.islink(uri) or not os.path.isfile(uri)):
        return False
    try:
        line = _first_line(uri)
        row = json.loads(line) if line.strip() else {"reason": ""}
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and "reason" in row


def check_quarantine(uri: str, *, overwrite: bool) -> None:
    if storage.is_s3(uri):
        folder = storage.is_dir(uri)
        present = folder or storage.exists(uri)
    else:
        folder = os.path.isdir(uri) and not os.path.islink(uri)
        present = os.path.lexists(uri)
    if not present:
        return
    if folder:
        raise UserError(f"data.quarantine={uri!r} is a directory (or an S3 prefix); the quarantine is one file. "
                        f"Point data.quarantine at a file such as <name>{QUARANTINE_SUFFIX} (nothing was touched).")
    if not overwrite and not is_quarantine_file(uri):
        raise UserError(f"data.quarantine={uri!r} already exists and is not a rayloom quarantine file; refusing to "
                        "replace it. Choose another data.quarantine, or set data.overwrite=true.")


def clear_quarantine(uri: str) -> None:
    """No bad rows this time: delete the previous run's quarantine file - only that one file."""
    if storage.exists(uri) and (storage.is_s3(uri) or os.path.isfile(uri)) and is_quarantine_file(uri):
        storage.remove_file(uri)


@dataclass(frozen=True)
class Destination:
    """The version being written: tasks write under `stage`."""

    output: str
    stage: str

    def write_json(self, name: str, obj: dict) -> None:
        storage.write_text(storage.join(self.stage, name), json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_bytes(self, name: str, data: bytes) -> None:
        storage.write_bytes(storage.join(self.stage, name), data)


@contextmanager
def shard_destination(output: str, *, overwrite: bool) -> Iterator[Destination]:
    """A new immutable version of `output`, published when the block ends (deleted if it raises)."""
    with storage.new_version(output, kind=DATASET_KIND, overwrite=overwrite) as pending:
        yield Destination(pending.uri, pending.path)
