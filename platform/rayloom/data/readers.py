"""Streaming, bounded reads: files -> read units -> records (raw bytes or parsed rows) in blocks.

The driver plans *read units* from file sizes (and Parquet footers): an uncompressed JSONL or
line-text file is cut into byte ranges of `data.read_block_bytes`, a Parquet file into groups of
row groups; a gzip file, a one-record-per-file or paragraph text file is one unit. A Ray Data task
reads one unit with bounded memory and yields *chunks* of about `read_block_bytes` of input:

- lines are read through a 1 MiB buffer; a line longer than `data.max_record_bytes` is skipped to
  its end without being held (a `too_large` record);
- gzip is decompressed as a stream and stops at `data.max_file_bytes` (a `file_too_large` record),
  so a gzip bomb is refused by reason;
- Parquet is read one row group at a time.

A record's position (the `row` of its record id) is the byte offset where it starts in the
(decompressed) file, or its row number in a Parquet file: a pure function of the file, so every
unit layout and every cluster gives the same ids. A unit owns the lines that *start* inside its
byte range (it reads past its end to finish its last line).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from rayloom.data.record_ids import MAX_ROWS_PER_FILE

_BUFFER = 1 << 20
GZIP_SUFFIX = ".gz"


@dataclass(frozen=True)
class Unit:
    """One read task's share of a file (a row of the read plan)."""

    source: int
    file: int
    path: str           # the filesystem's path spelling
    format: str         # jsonl | parquet | text
    text_unit: str      # file | paragraph | line (text files)
    start: int          # byte offset (line files) or first row group (Parquet)
    end: int            # byte end, exclusive (line files) or row group end; -1: to the end
    first_row: int      # Parquet: row number of the first row of `start`
    size: int           # file size in bytes


@dataclass
class Item:
    """One record's raw form: `raw` bytes (line files), a parsed `row` (Parquet), or a `problem`
    (too_large / file_too_large / unreadable_file) with a detail and a preview of the bytes."""

    position: int
    raw: bytes | None = None
    row: dict | None = None
    problem: str | None = None
    detail: str = ""
    preview: bytes = b""


def splittable(path: str, file_format: str, text_unit: str) -> bool:
    if path.lower().endswith(GZIP_SUFFIX):
        return False
    return file_format == "jsonl" or (file_format == "text" and text_unit == "line")


def plan_file(source: int, file: int, path: str, file_format: str, text_unit: str, size: int, fs,
              block_bytes: int, max_file: int) -> list[Unit]:
    """The read units of one file (driver side: sizes and Parquet footers only)."""
    unit = Unit(source, file, path, file_format, text_unit, 0, -1, 0, size)
    if file_format == "parquet":
        import pyarrow.parquet as pq  # pyarrow stays out of `import rayloom.data`

        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except Exception:  # noqa: BLE001 - a corrupt footer: one unit, which quarantines the file
            return [unit]
        units, start, rows, first, acc = [], 0, 0, 0, 0
        for g in range(meta.num_row_groups):
            acc += meta.row_group(g).total_byte_size
            rows += meta.row_group(g).num_rows
            if acc >= block_bytes or g == meta.num_row_groups - 1:
                units.append(Unit(source, file, path, file_format, text_unit, start, g + 1, first, size))
                start, first, acc = g + 1, rows, 0
        return units or [unit]
    if not splittable(path, file_format, text_unit) or size <= block_bytes or size > max_file:
        return [unit]
    return [Unit(source, file, path, file_format, text_unit, s, min(s + block_bytes, size), 0, size)
            for s in range(0, size, block_bytes)]


class _Bounded:
    """A readable stream that stops at `limit` bytes and says so (`over`)."""

    def __init__(self, stream, limit: int) -> None:
        self.stream, self.limit, self.read_bytes, self.over = stream, limit, 0, False

    def read(self, n: int) -> bytes:
        if self.read_bytes >= self.limit:
            if self.stream.read(1):
                self.over = True
            return b""
        data = self.stream.read(min(n, self.limit - self.read_bytes))
        self.read_bytes += len(data)
        return data


class _LineReader:
    """Lines of a stream through a bounded buffer; a line over the limit is skipped, not held."""

    def __init__(self, read, pos: int) -> None:
        self.read, self.pos, self.buf = read, pos, b""

    def next(self, limit: int) -> tuple[int, bytes | None, int, bytes] | None:
        """(start, line or None when longer than `limit`, its size, preview of a long one); None at the end."""
        start, scanned = self.pos, 0
        while True:
            cut = self.buf.find(b"\n", scanned)
            if cut >= 0:
                line, self.buf = self.buf[:cut], self.buf[cut + 1:]
                self.pos = start + cut + 1
                return (start, line, cut, b"") if cut <= limit else (start, None, cut, line[:1000])
            if len(self.buf) > limit:
                return self._skip(start)
            scanned = len(self.buf)
            data = self.read(_BUFFER)
            if not data:
                if not self.buf:
                    return None
                line, self.buf = self.buf, b""
                self.pos = start + len(line)
                return (start, line, len(line), b"") if len(line) <= limit else (start, None, len(line), line[:1000])
            self.buf += data

    def _skip(self, start: int) -> tuple[int, None, int, bytes]:
        preview, size, self.buf = self.buf[:1000], len(self.buf), b""
        while True:
            data = self.read(_BUFFER)
            if not data:
                self.pos = start + size
                return start, None, size, preview
            nl = data.find(b"\n")
            if nl >= 0:
                size += nl
                self.buf, self.pos = data[nl + 1:], start + size + 1
                return start, None, size, preview
            size += len(data)


def _too_large(pos: int, size: int, preview: bytes, limit: int) -> Item:
    return Item(pos, problem="too_large", detail=f"record of {size:,} bytes is larger than "
                f"data.max_record_bytes={limit:,}", preview=preview)


def _line_items(reader: _LineReader, end: int, limit: int) -> Iterator[Item]:
    while end < 0 or reader.pos < end:
        got = reader.next(limit)
        if got is None:
            return
        pos, line, n, preview = got
        if line is not None and not line.strip():
            # Not a record (parsing drops blank lines too), so never an Item: a gzip "bomb" of
            # newlines would otherwise send millions of empty rows through the pipeline.
            continue
        yield Item(pos, raw=line) if line is not None else _too_large(pos, n, preview, limit)


def _paragraphs(reader: _LineReader, limit: int) -> Iterator[Item]:
    """Blank-line separated paragraphs, one record each."""
    start, parts, size, big = None, [], 0, None
    while True:
        got = reader.next(limit)
        if got is None:
            break
        pos, line, n, preview = got
        if line is not None and not line.strip():
            if start is not None:
                yield big or Item(start, raw=b"\n".join(parts))
            start, parts, size, big = None, [], 0, None
            continue
        if start is None:
            start = pos
        size += n + 1
        if big is None and (line is None or size > limit):
            big = _too_large(start, size, preview or (parts[0][:1000] if parts else (line or b"")[:1000]), limit)
            parts = []
        elif big is None:
            parts.append(line)
        else:
            big.detail = f"record of {size:,} bytes is larger than data.max_record_bytes={limit:,}"
    if start is not None:
        yield big or Item(start, raw=b"\n".join(parts))


def _text_items(read, unit: Unit, limit: int) -> Iterator[Item]:
    if unit.format == "text" and unit.text_unit == "file":
        data = read(limit + 1)
        while len(data) <= limit:
            more = read(limit + 1 - len(data))
            if not more:
                break
            data += more
        yield Item(0, raw=data) if len(data) <= limit else _too_large(0, unit.size, data[:1000], limit)
        return
    reader = _LineReader(read, max(unit.start - 1, 0))
    if unit.start > 0:  # the line that started in the previous unit is that unit's
        reader.next(0)
    if unit.format == "text" and unit.text_unit == "paragraph":
        yield from _paragraphs(reader, limit)
    else:
        yield from _line_items(reader, unit.end, limit)


def read_unit(unit: Unit, fs, *, max_record: int, max_file: int, block_bytes: int) -> Iterator[list[Item]]:
    """Chunks (lists of Items) of one unit, each about `block_bytes` of input, memory bounded."""
    if unit.format == "parquet":
        yield from _read_parquet(unit, fs)
        return
    gz = unit.path.lower().endswith(GZIP_SUFFIX)
    if unit.size > max_file and not gz:
        yield [Item(0, problem="file_too_large", detail=f"the file holds {unit.size:,} bytes, more than "
                    f"data.max_file_bytes={max_file:,}")]
        return
    chunk: list[Item] = []
    chunk_bytes = 0
    bounded = None
    last = unit.start - 1
    try:
        with fs.open_input_file(unit.path) as raw:
            if gz:
                bounded = _Bounded(gzip.GzipFile(fileobj=raw, mode="rb"), min(max_file, MAX_ROWS_PER_FILE - 1))
                read = bounded.read
            else:
                if unit.start > 0:
                    raw.seek(unit.start - 1)
                read = raw.read
            for item in _text_items(read, unit, max_record):
                chunk.append(item)
                last = item.position
                chunk_bytes += len(item.raw or b"") + 1
                if chunk_bytes >= block_bytes:
                    yield chunk
                    chunk, chunk_bytes = [], 0
        if bounded is not None and bounded.over:
            chunk.append(Item(bounded.read_bytes, problem="file_too_large",
                              detail=f"the file decompresses to more than data.max_file_bytes={max_file:,} "
                                     "bytes; the rest is not read"))
    except (OSError, EOFError, zlib.error) as exc:
        # A corrupt or truncated file (broken gzip) ends here as one bad record; what was read stays.
        # Its position is inside the last record read (or the unit's start): no other record's.
        chunk.append(Item(max(last + 1, unit.start), problem="unreadable_file", detail=f"{type(exc).__name__}: {exc}"[:500]))
    if chunk:
        yield chunk


def _read_parquet(unit: Unit, fs) -> Iterator[list[Item]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk: list[Item] = []
    row = unit.first_row
    try:
        with fs.open_input_file(unit.path) as f:
            pf = pq.ParquetFile(f)
            end = pf.metadata.num_row_groups if unit.end < 0 else unit.end
            for group in range(unit.start, end):
                for item in pf.read_row_group(group).to_pylist():
                    chunk.append(Item(row, row=item))
                    row += 1
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:
        chunk.append(Item(row, problem="unreadable_file", detail=f"{type(exc).__name__}: {exc}"[:500]))
    if chunk:
        yield chunk
