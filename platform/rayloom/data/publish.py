"""Where shards are written while the job runs, and how they are published (commit semantics).

Readers only trust a directory with the `_COMMITTED` marker (rayloom.storage), written last:
- local output: tasks write into a hidden staging directory next to the output, which
  storage.commit_dir then publishes atomically (rename), replacing an older version;
- s3:// output: there is no rename, so the old marker is removed first, tasks write straight
  under the prefix, and the marker goes last.
An existing output that is not a rayloom dataset is never overwritten.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from rayloom import storage
from rayloom.data.schema import MANIFEST
from rayloom.errors import UserError

log = logging.getLogger(__name__)


def check_replaceable(output: str) -> None:
    """Refuse to write over a directory that holds something other than rayloom shards."""
    if not storage.exists(output) and not (storage.is_s3(output) and storage.is_dir(output)):
        return
    if not storage.is_dir(output):
        raise UserError(f"data.output={output!r} is a file, not a directory")
    files = storage.list_files(output)
    if files and MANIFEST not in files and storage.COMMIT_MARKER not in files:
        raise UserError(f"data.output={output!r} already holds files that are not a rayloom dataset; "
                        "choose another data.output (nothing was overwritten)")


class ShardDestination:
    """Staging location for one job's shards, and its publication."""

    def __init__(self, output: str) -> None:
        check_replaceable(output)
        self.output = output
        if storage.is_s3(output):
            storage.remove(storage.join(output, storage.COMMIT_MARKER))
            storage.remove(output)
            self.stage = output
        else:
            parent = Path(output).resolve().parent
            parent.mkdir(parents=True, exist_ok=True)
            self.stage = tempfile.mkdtemp(prefix=f".{Path(output).name}.building-", dir=parent)

    def write_json(self, name: str, obj: dict) -> None:
        storage.write_text(storage.join(self.stage, name), json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_bytes(self, name: str, data: bytes) -> None:
        storage.write_bytes(storage.join(self.stage, name), data)

    def publish(self) -> str:
        if storage.is_s3(self.output):
            storage.write_text(storage.join(self.output, storage.COMMIT_MARKER), "ok\n")
            return self.output
        try:
            return storage.commit_dir(self.stage, self.output)
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        if not storage.is_s3(self.output):
            shutil.rmtree(self.stage, ignore_errors=True)
