"""Output-path checks: an output never swallows the storage root or its own inputs."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from rayloom.errors import UserError
from rayloom.storage._io import is_s3


def _norm(uri: str | os.PathLike) -> str:
    uri = str(uri)
    if is_s3(uri):
        # S3 keys are literal, but rayloom builds them by joining names: treat '..' as a parent
        # here, so refusing is conservative.
        return "s3://" + posixpath.normpath(uri[len("s3://"):]).strip("/")
    return os.path.realpath(os.path.expanduser(uri))


def _within(inner: str, outer: str) -> bool:
    """True when `inner` is `outer` or below it."""
    if inner == outer:
        return True
    sep = "/" if is_s3(outer) else os.sep
    return inner.startswith(outer.rstrip(sep) + sep)


def check_output_path(output: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                      root: str | os.PathLike | None = None, what: str = "output") -> None:
    """Refuse an output that is the storage root, a folder above it, one of its own inputs or a
    folder above one: publishing there would replace data the job does not own."""
    out = _norm(output)
    if root is not None and str(root) and _within(_norm(root), out):
        raise UserError(f"{what}={str(output)!r} is the storage root {str(root)!r} or a folder above it; "
                        f"writing there would replace every run's data. Name a new folder under it.")
    for source in inputs:
        if source is not None and str(source) and _within(_norm(source), out):
            raise UserError(f"{what}={str(output)!r} is the job's own input {str(source)!r} or a folder above "
                            f"it; writing there would replace what is being read. Choose another output path.")


def is_within(inner: str | os.PathLike, outer: str | os.PathLike) -> bool:
    return _within(_norm(inner), _norm(outer))
