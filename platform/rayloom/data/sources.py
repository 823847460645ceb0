"""Resolve `data.sources` to concrete files (local or s3://), in a fixed order.

Reading is readers.py (streaming, bounded, one huge file split into many read units) and
parsing.py (every bad record becomes a quarantined row instead of a crashed job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rayloom import storage
from rayloom.config.data import SourceConfig
from rayloom.data.record_ids import MAX_FILES_PER_SOURCE
from rayloom.errors import UserError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class SourceFiles:
    """A source with its files in a fixed order; picklable, shipped to Ray Data tasks."""

    index: int
    config: SourceConfig
    files: tuple[str, ...]          # full URIs / absolute paths, sorted
    formats: tuple[str, ...]        # jsonl | parquet | text, per file
    sizes: tuple[int, ...]
    relatives: tuple[str, ...]      # paths relative to the source path (the file name for a file)


def file_format(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def _absolute(path: str) -> str:
    return path if storage.is_s3(path) else os.path.abspath(os.path.expanduser(path))


def _visible(relative: str) -> bool:
    # Skip markers and hidden files (_COMMITTED, _SUCCESS, .DS_Store, .staging dirs).
    return not any(part.startswith((".", "_")) for part in relative.split("/"))


def resolve_source(index: int, source: SourceConfig) -> SourceFiles:
    from pyarrow import fs as pafs

    root = _absolute(source.path)
    key = f"data.sources[{index}].path"
    fs, fs_path = storage.filesystem(root)
    info = fs.get_file_info(fs_path)
    if info.type == pafs.FileType.File:
        files, sizes, relatives = [root], [info.size], [os.path.basename(root.rstrip("/"))]
    else:
        relatives = [r for r in storage.list_files(root) if _visible(r)] if storage.is_dir(root) else []
        if info.type == pafs.FileType.NotFound and not relatives:
            raise UserError(f"{key}={source.path!r} does not exist")
        if not relatives:
            raise UserError(f"{key}={source.path!r} is a directory with no data files")
        files = [storage.join(root, r) for r in relatives]
        sizes = [fs.get_file_info(storage.filesystem(f)[1]).size for f in files]
    if len(files) > MAX_FILES_PER_SOURCE:
        raise UserError(f"{key}={source.path!r} has {len(files)} files; split it into several sources "
                        f"(at most {MAX_FILES_PER_SOURCE} files each)")
    formats = tuple(file_format(f, source.format) for f in files)
    if source.schema != "text" and "text" in formats:
        bad = files[formats.index("text")]
        raise UserError(f"{key}={source.path!r}: {bad} is read as plain text (by its extension), but "
                        f"data.sources[{index}].schema={source.schema!r} needs jsonl or parquet files; set "
                        f"data.sources[{index}].format")
    normalized = SourceConfig(**{**source.__dict__, "path": root})
    return SourceFiles(index=index, config=normalized, files=tuple(files),
                       formats=formats, sizes=tuple(sizes),
                       relatives=tuple(relatives))


def resolve_sources(sources: list[SourceConfig]) -> list[SourceFiles]:
    if not sources:
        raise UserError("data.sources is empty: list at least one source (path, schema), or use data=demo")
    return [resolve_source(i, s) for i, s in enumerate(sources)]


def fs_path(uri: str) -> str:
    return storage.filesystem(uri)[1]
