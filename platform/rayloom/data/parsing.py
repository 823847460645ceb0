"""Inside Ray Data tasks: read units -> validated, cleaned, keyed records, one chunk at a time.

One output row per record (a JSONL line, a Parquet row, a text unit), whatever happens to it:
`status` is "ok", "bad" (quarantined: reason + detail + a raw preview) or "filtered" (a quality
filter's reason). Nothing is dropped here, so every record is counted. No record can fail the job:
every parse or validation error, a lone surrogate, 10,000-deep nesting, NUL bytes, invalid UTF-8,
a record over data.max_record_bytes, a gzip bomb or a corrupt file becomes a bad row with its
reason. `chunk` is the id of the first record of the read chunk (readers.read_unit) the record
came in: the tokenize/pack stage packs each chunk on its own, whatever Ray's block layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from rayloom.config.data import DataConfig, SourceConfig
from rayloom.data.cleaning import filter_reason, text_words
from rayloom.data.dedup import exact_key, minhash_signatures
from rayloom.data.readers import Item, Unit, read_unit
from rayloom.data.record_ids import record_id
from rayloom.data.records import BadRecord, canonical_json, payload_text, validate, validate_text

RAW_PREVIEW_CHARS = 1000

RECORD_SCHEMA = pa.schema([
    ("doc_id", pa.int64()),
    ("chunk", pa.int64()),
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

PLAN_COLUMNS = ("source", "file", "path", "format", "text_unit", "start", "end", "first_row", "size")


def _preview(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw[:RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="backslashreplace")
    # Lone surrogates cannot be stored as Arrow strings: escape them like invalid bytes.
    return text[:RAW_PREVIEW_CHARS].encode("utf-8", errors="backslashreplace").decode("utf-8")


def _json_preview(obj) -> str:
    try:
        return _preview(json.dumps(obj, default=str)[:RAW_PREVIEW_CHARS])
    except (ValueError, RecursionError, TypeError):
        return _preview(repr(obj)[:RAW_PREVIEW_CHARS])


class ParseUnits:
    """map_batches function over read-plan rows (batch_size=1): yields one table per read chunk."""

    def __init__(self, sources: list[SourceConfig], filesystems: list, data: DataConfig, signatures: bool) -> None:
        self.sources = sources
        self.filesystems = filesystems
        self.data = data
        self.signatures = signatures and data.dedup.near

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for plan in batch.to_pylist():
            unit = Unit(**{k: plan[k] for k in PLAN_COLUMNS})
            for items in read_unit(unit, self.filesystems[unit.source], max_record=self.data.max_record_bytes,
                                   max_file=self.data.max_file_bytes, block_bytes=self.data.read_block_bytes):
                table = self.parse_chunk(unit, items)
                if table.num_rows:
                    yield table

    def parse_chunk(self, unit: Unit, items: list[Item]) -> pa.Table:
        config = self.sources[unit.source]
        rows = []
        for item in items:
            row = self._row(unit, config, item)
            if row is not None:
                rows.append(row)
        ok = [r for r in rows if r["status"] == "ok"]
        texts = [r.pop("_text") for r in ok]
        words = [r.pop("_words") for r in ok]
        for row, text in zip(ok, texts, strict=True):
            row["exact"] = exact_key(text)
        if self.signatures and ok:
            for row, signature in zip(ok, minhash_signatures(texts, self.data.dedup, words), strict=True):
                row["signature"] = signature
        if rows:
            first = rows[0]["doc_id"]
            for row in rows:
                row["chunk"] = first
        return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)

    def _row(self, unit: Unit, config: SourceConfig, item: Item) -> dict | None:
        doc_id = record_id(unit.source, unit.file, item.position)
        schema = config.schema
        if item.problem is not None:
            return _row(doc_id, schema, "bad", item.problem, item.detail, raw=_preview(item.preview))
        if item.raw is not None and not item.raw.strip() and not (unit.format == "text" and unit.text_unit == "file"):
            return None  # blank lines (a trailing newline) and paragraph separators are not records
        try:
            payload = self._payload(unit, config, item)
            text = payload_text(payload)
            words = text_words(text)   # shared by the repetition filter and the MinHash shingles
            reason = filter_reason(text, self.data.filters, words)
            if reason is not None:
                return _row(doc_id, schema, "filtered", reason, None, num_chars=len(text))
            row = _row(doc_id, schema, "ok", None, None, payload=canonical_json(payload), num_chars=len(text))
        except BadRecord as exc:
            raw = _preview(item.raw) if item.raw is not None else _json_preview(item.row)
            return _row(doc_id, schema, "bad", exc.reason, exc.detail[:500], raw=raw)
        except Exception as exc:  # noqa: BLE001 - whatever a record does, it is quarantined, never fatal
            raw = _preview(item.raw) if item.raw is not None else _json_preview(item.row)
            return _row(doc_id, schema, "bad", "invalid", f"{type(exc).__name__}: {exc}"[:500], raw=raw)
        row["_text"], row["_words"] = text, words
        return row

    def _payload(self, unit: Unit, config: SourceConfig, item: Item) -> dict:
        form = self.data.filters.unicode_form
        if item.row is not None:
            return validate(item.row, config.schema, config.text_key, form)
        try:
            text = item.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord("not_utf8", f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
        if unit.format == "text":
            return validate_text(text, form)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRecord("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}") from None
        except (RecursionError, ValueError) as exc:
            # Deep nesting (RecursionError) or numbers Python refuses to convert.
            raise BadRecord("malformed_json", f"malformed JSON: {type(exc).__name__}: {exc}"[:300]) from None
        return validate(obj, config.schema, config.text_key, form)


def _row(doc_id: int, schema: str, status: str, reason: str | None, detail: str | None, *, raw: str | None = None,
         payload: str | None = None, num_chars: int = 0) -> dict:
    return {"doc_id": doc_id, "chunk": doc_id, "schema": schema, "status": status, "reason": reason,
            "detail": detail, "raw": raw, "payload": payload, "num_chars": num_chars, "exact": None,
            "signature": None}
