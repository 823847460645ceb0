"""Streaming reads and hostile input (no Ray): every bad record is a quarantined row with its reason,
memory stays bounded, and splitting a file into many read units changes nothing."""

from __future__ import annotations

import json
import tracemalloc
import zlib

import pyarrow as pa
import pytest
from unit.test_data_records import parse_file

from rayloom.config import DataConfig, DedupConfig, SourceConfig
from rayloom.data.record_ids import locate, record_id
from rayloom.errors import UserError


def _reasons(rows):
    return [(r["status"], r["reason"]) for r in rows]


def test_hostile_records_are_quarantined_with_their_reason(tmp_path):
    lines = [
        b'{"text": "a \\ud800 lone surrogate"}',        # valid JSON, not text
        b"[" * 10_000 + b"]" * 10_000,                    # 10,000-deep nesting
        b'{"text": "a NUL \\u0000 inside"}',             # NUL character
        b'{"text": "raw NUL \x00 byte"}',                # raw NUL: not JSON
        b'{"text": "caf\xe9"}',                            # invalid UTF-8
        b'{"text": "' + b"x" * 3_000_000 + b'"}',         # a multi-megabyte line
        json.dumps({"text": "a good record at the end"}).encode(),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = parse_file(path, data=DataConfig(max_record_bytes=1_000_000, dedup=DedupConfig(num_perm=16)))
    assert _reasons(rows) == [("bad", "not_utf8"), ("bad", "malformed_json"), ("bad", "nul_byte"),
                              ("bad", "malformed_json"), ("bad", "not_utf8"), ("bad", "too_large"), ("ok", None)]
    assert all(len(r["raw"] or "") <= 1000 for r in rows)
    pa.Table.from_pylist(rows)  # every preview is storable (no lone surrogates)


def test_a_gzip_bomb_is_refused_by_reason_with_bounded_memory(tmp_path):
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    line = json.dumps({"text": "the same words again and again " * 30}).encode() + b"\n"
    block = line * 2000
    parts = [compressor.compress(block) for _ in range(180)]   # ~340 MB once decompressed
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(b"".join(parts) + compressor.flush())
    assert path.stat().st_size < 5_000_000
    tracemalloc.start()
    rows = parse_file(path, data=DataConfig(max_file_bytes=1_000_000, dedup=DedupConfig(near=False)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows[-1]["status"] == "bad" and rows[-1]["reason"] == "file_too_large"
    # The records before the limit are read (the one cut by it is malformed), then the file stops.
    assert {r["status"] for r in rows[:-2]} == {"filtered"} and len(rows) - 1 == 1_000_000 // len(line) + 1
    assert rows[-2]["reason"] == "malformed_json"
    assert peak < 150_000_000


def test_corrupt_gzip_keeps_what_was_read_and_quarantines_the_rest(tmp_path):
    import gzip

    data = gzip.compress(b"".join(json.dumps({"text": f"record number {i}"}).encode() + b"\n" for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    rows = parse_file(path)
    assert rows[-1]["reason"] == "unreadable_file"
    assert {r["status"] for r in rows[:-1]} <= {"ok"}
    assert len({r["doc_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("text_unit", ["line", None])
def test_splitting_a_file_into_read_units_gives_the_same_records(tmp_path, text_unit):
    lines = [json.dumps({"text": f"document {i} " + "word " * (i % 37)}) for i in range(3000)]
    lines[100] = json.dumps({"text": "long " * 3000})          # crosses unit boundaries
    lines[200] = ""                                             # blank line: not a record
    name, source = ("a.txt", {"format": "text", "text_unit": "line"}) if text_unit else ("a.jsonl", {})
    path = tmp_path / name
    path.write_bytes(("\n".join(lines) + "\n").encode())
    whole = parse_file(path, **source)
    split = parse_file(path, data=DataConfig(read_block_bytes=4096, dedup=DedupConfig(num_perm=16)), **source)
    key = lambda rows: [(r["doc_id"], r["status"], r["payload"], r["signature"]) for r in rows]  # noqa: E731
    assert key(split) == key(whole) and len(whole) == 2999
    assert len({r["chunk"] for r in split}) > 10 and len({r["chunk"] for r in whole}) == 1
    offsets = [locate(r["doc_id"])[2] for r in whole]
    data = path.read_bytes()
    assert all(o == 0 or data[o - 1:o] == b"\n" for o in offsets)


def test_record_id_overflow_and_source_limits_are_errors_not_collisions():
    with pytest.raises(ValueError):
        record_id(128, 0, 0)
    with pytest.raises(ValueError):
        record_id(0, 0, 1 << 35)
    with pytest.raises(UserError, match="data.sources"):
        DataConfig(sources=[SourceConfig(path=f"/p{i}") for i in range(129)])
    DataConfig(sources=[SourceConfig(path=f"/p{i}") for i in range(128)])
    for weight in (float("inf"), float("nan"), 1e9):
        with pytest.raises(UserError, match="weight"):
            SourceConfig(path="/p", weight=weight)
    with pytest.raises(UserError, match="max_file_bytes"):
        DataConfig(max_file_bytes=1 << 40)
