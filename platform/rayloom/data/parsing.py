"""Inside Ray Data tasks: raw file bytes -> validated, cleaned, keyed records.

One output row per record (a JSONL line, a Parquet row, a text unit), whatever happens to it:
`status` is "ok", "bad" (quarantined: reason + detail + a raw preview) or "filtered" (a quality
filter's reason). Nothing is dropped here, so the driver can count every record.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib

import pyarrow as pa

from rayloom.config.data import DedupConfig, FilterConfig
from rayloom.data.cleaning import filter_reason
from rayloom.data.dedup import exact_key, minhash_signatures
from rayloom.data.record_ids import MAX_ROWS_PER_FILE, record_id
from rayloom.data.records import BadRecord, canonical_json, payload_text, validate, validate_text
from rayloom.data.sources import SourceFiles, fs_path

RAW_PREVIEW_CHARS = 1000
_PARAGRAPH = re.compile(rb"\n[ \t\r]*\n")

RECORD_SCHEMA = pa.schema([
    ("doc_id", pa.int64()),
    ("schema", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("raw", pa.string()),
    ("payload", pa.string()),
    ("num_chars", pa.int64()),
    ("exact", pa.binary()),
    ("signature", pa.binary()),
])


def _preview(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="backslashreplace")
    return text[:RAW_PREVIEW_CHARS]


def _units(data: bytes, file_format: str, text_unit: str, path: str):
    """(row index, raw unit, parsed object or None, BadRecord or None) for every record of a file."""
    if path.lower().endswith(".gz"):
        data = gzip.decompress(data)
    if file_format == "parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(pa.BufferReader(data)).to_pylist()):
            yield i, None, row, None
        return
    if file_format == "text":
        if text_unit == "file":
            pieces = [data]
        else:
            pieces = _PARAGRAPH.split(data) if text_unit == "paragraph" else data.split(b"\n")
        for i, piece in enumerate(pieces):
            if text_unit != "file" and not piece.strip():
                continue  # separators, not records
            try:
                yield i, piece, piece.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                yield i, piece, None, BadRecord("not_utf8", f"not valid UTF-8: {exc.reason} at byte {exc.start}")
        return
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue  # blank lines (a trailing newline) are not records
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield i, line, None, BadRecord("not_utf8", f"not valid UTF-8: {exc.reason} at byte {exc.start}")
            continue
        try:
            yield i, line, json.loads(text), None
        except json.JSONDecodeError as exc:
            yield i, line, None, BadRecord("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}")


class ParseRecords:
    """map_batches function over read_binary_files rows (bytes, path) of one source."""

    def __init__(self, source: SourceFiles, filters: FilterConfig, dedup: DedupConfig, signatures: bool) -> None:
        self.source = source
        self.filters = filters
        self.dedup = dedup
        self.signatures = signatures and dedup.near
        self.file_index = {fs_path(f): i for i, f in enumerate(source.files)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict] = []
        for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist(), strict=True):
            rows += self._file_rows(data, path)
        ok = [r for r in rows if r["status"] == "ok"]
        texts = [r.pop("_text") for r in ok]
        for row, text in zip(ok, texts, strict=True):
            row["exact"] = exact_key(text)
        if self.signatures and ok:
            for row, signature in zip(ok, minhash_signatures(texts, self.dedup), strict=True):
                row["signature"] = signature
        for row in rows:
            row.pop("_text", None)
        return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)

    def _file_rows(self, data: bytes, path: str) -> list[dict]:
        file_idx = self.file_index[path]
        file_format = self.source.formats[file_idx]
        config = self.source.config
        schema = config.schema
        rows = []
        try:
            for row_idx, raw, obj, bad in _units(data, file_format, config.text_unit, path):
                assert row_idx < MAX_ROWS_PER_FILE
                doc_id = record_id(self.source.index, file_idx, row_idx)
                if bad is None:
                    try:
                        if file_format == "text":
                            payload = validate_text(obj, self.filters.unicode_form)
                        else:
                            payload = validate(obj, schema, config.text_key, self.filters.unicode_form)
                    except BadRecord as exc:
                        bad = exc
                if bad is not None:
                    preview = _preview(raw) if raw is not None else _preview(json.dumps(obj, default=str))
                    rows.append(_row(doc_id, schema, "bad", bad.reason, bad.detail, raw=preview))
                    continue
                text = payload_text(payload)
                reason = filter_reason(text, self.filters)
                if reason is not None:
                    rows.append(_row(doc_id, schema, "filtered", reason, None, num_chars=len(text)))
                    continue
                row = _row(doc_id, schema, "ok", None, None, payload=canonical_json(payload), num_chars=len(text))
                row["_text"] = text
                rows.append(row)
        except (OSError, EOFError, zlib.error, pa.ArrowException) as exc:
            # A corrupt file (broken gzip or Parquet) is one bad record, not a crashed job.
            rows = [_row(record_id(self.source.index, file_idx, 0), schema, "bad", "unreadable_file",
                         f"{type(exc).__name__}: {exc}"[:500], raw=_preview(data[:RAW_PREVIEW_CHARS]))]
        return rows


def _row(doc_id: int, schema: str, status: str, reason: str | None, detail: str | None, *, raw: str | None = None,
         payload: str | None = None, num_chars: int = 0) -> dict:
    return {"doc_id": doc_id, "schema": schema, "status": status, "reason": reason, "detail": detail, "raw": raw,
            "payload": payload, "num_chars": num_chars, "exact": None, "signature": None}
