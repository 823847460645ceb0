"""The commit marker: what a committed artifact is, where its current version lives.

Layout (see docs/storage.md):
- S3: `<uri>/v-<id>/...` holds each immutable version with its own `_COMMITTED` manifest;
  `<uri>/_COMMITTED` is the pointer, a copy of the current version's manifest, written last.
- Local: `<parent>/.<name>.versions/v-<id>/...` holds the versions; `<uri>` is a relative symlink
  to the current one, switched atomically (rename) after the version's manifest is written.
The manifest is JSON: format, kind, version, files {relative path: size}, history (older
version ids kept for rollback, newest first), created. A marker containing just "ok" was written
by rayloom before versioning (a "legacy" commit: files live directly under the URI).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass, field

from rayloom.errors import UserError
from rayloom.storage._io import basename, is_s3, join, read_bytes_raw

COMMIT_MARKER = "_COMMITTED"
LEASE_OBJECT = "_LEASE"  # S3 lease object inside the artifact prefix
FORMAT = "rayloom-commit/1"
VERSION_RE = re.compile(r"^v-\d{8}T\d{6}-[0-9a-f]{8}$")
_LEGACY_MARKERS = ("ok", "ok\n")


def new_version_id() -> str:
    now = dt.datetime.now(dt.UTC)
    return f"v-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def versions_dir(local_uri: str) -> str:
    """The hidden folder beside a local artifact that holds its versions."""
    path = os.path.abspath(local_uri)
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.versions")


def version_path(uri: str, version: str) -> str:
    return join(uri, version) if is_s3(uri) else os.path.join(versions_dir(uri), version)


@dataclass(frozen=True)
class CommitInfo:
    """One committed version of an artifact, as its marker describes it."""

    uri: str  # the artifact's own URI (what callers name)
    path: str  # where this version's files are: read them from here
    version: str  # "v-<UTC time>-<random>", or "legacy" for pre-versioning commits
    kind: str | None = None
    files: dict[str, int] | None = None  # relative path -> size; None for legacy commits
    history: tuple[str, ...] = ()
    created: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def legacy(self) -> bool:
        return self.files is None

    def marker_text(self) -> str:
        return json.dumps({"format": FORMAT, "kind": self.kind, "version": self.version, "files": self.files,
                           "history": list(self.history), "created": self.created, **self.extra},
                          indent=1, sort_keys=True) + "\n"


def parse_marker(text: str) -> dict | None:
    """The manifest of a rayloom marker; {} for a legacy "ok" marker; None when it is not rayloom's."""
    if text in _LEGACY_MARKERS:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not VERSION_RE.match(str(data.get("version"))):
        return None
    if not isinstance(data.get("files"), dict):
        return None
    return data


def read_marker(uri: str) -> dict | None:
    """parse_marker of `<uri>/_COMMITTED`, or None when there is none (or it is not rayloom's)."""
    try:
        raw = read_bytes_raw(join(uri, COMMIT_MARKER))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return parse_marker(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def read_commit(uri: str | os.PathLike) -> CommitInfo | None:
    """The committed version `uri` currently names (a version URI names itself); None if uncommitted."""
    uri = str(uri).rstrip("/") if is_s3(uri) else os.path.abspath(uri)
    path = uri
    if not is_s3(uri) and os.path.islink(uri):
        # Resolve the link first and read the marker there: a switch in between cannot mix versions.
        path = os.path.realpath(uri)
    data = read_marker(path)
    if data is None:
        return None
    if not data:
        return CommitInfo(uri=uri, path=path, version="legacy")
    version = data["version"]
    if is_s3(uri) and basename(uri) != version:
        path = join(uri, version)
    extra = {k: v for k, v in data.items() if k not in ("format", "kind", "version", "files", "history", "created")}
    return CommitInfo(uri=uri, path=path, version=version, kind=data.get("kind"),
                      files={str(k): int(v) for k, v in data["files"].items()},
                      history=tuple(str(h) for h in data.get("history") or ()),
                      created=str(data.get("created", "")), extra=extra)


def not_committed_error(uri: str, what: str = "") -> UserError:
    return UserError(
        f"{what + ' ' if what else ''}{uri} is not a committed rayloom artifact (no valid {COMMIT_MARKER} "
        f"marker): it is still being written, its writer crashed, or another tool put it there. Readers only "
        f"trust committed artifacts; publish it with rayloom (storage.commit_dir / `rayloom export`)."
    )


def resolve_committed(uri: str | os.PathLike, what: str = "") -> str:
    """Where to read the current committed version of `uri` from; a UserError when uncommitted.

    Resolve once and read every file from the returned path: the version there is immutable and
    kept (storage.keep_versions) while newer commits land, so the reader sees one consistent version.
    """
    info = read_commit(uri)
    if info is None:
        raise not_committed_error(str(uri), what)
    return info.path


def is_committed(uri: str | os.PathLike) -> bool:
    return read_commit(uri) is not None
