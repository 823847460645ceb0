"""Record validation, cleaning filters and the worker-side parser (no Ray)."""

from __future__ import annotations

import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayloom import storage
from rayloom.config import DataConfig, DedupConfig, FilterConfig, SourceConfig
from rayloom.data.cleaning import boilerplate_fraction, filter_reason, repetition_fraction, symbol_fraction
from rayloom.data.parsing import ParseUnits
from rayloom.data.readers import plan_file
from rayloom.data.record_ids import locate
from rayloom.data.records import BadRecord, payload_text, validate, validate_text
from rayloom.data.sources import resolve_source
from rayloom.errors import UserError


@pytest.mark.parametrize("obj,schema,reason", [
    ([1, 2], "text", "schema"),
    ({"txt": "x"}, "text", "schema"),
    ({"text": 5}, "text", "schema"),
    ({"text": "  \n "}, "text", "empty"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "schema"),          # nothing to train on
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages", "schema"),
    ({"messages": [{"role": "user"}]}, "messages", "schema"),
    ({"prompt": "q", "chosen": "a"}, "preference", "schema"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "preference", "schema"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "preference", "empty"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "preference", "schema"),
])
def test_invalid_records_name_their_reason(obj, schema, reason):
    with pytest.raises(BadRecord) as info:
        validate(obj, schema, "text", "NFC")
    assert info.value.reason == reason and info.value.detail


def test_records_are_normalised_to_one_shape_per_schema():
    assert validate({"text": " Cafe\u0301\r\n "}, "text", "text", "NFC") == {"text": "Caf\u00e9"}
    assert validate({"body": "x"}, "text", "body", "NFC") == {"text": "x"}
    chat = validate({"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]},
                    "messages", "text", "none")
    assert chat == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    pref = validate({"prompt": "q?", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
                    "preference", "text", "NFC")
    assert pref == {"prompt": [{"role": "user", "content": "q?"}], "chosen": "a", "rejected": "b"}
    assert payload_text(pref) == "q?\na\nb"
    with pytest.raises(BadRecord):
        validate_text("   ", "NFC")


def test_filters_drop_with_a_reason():
    f = FilterConfig(min_chars=10, max_chars=200)
    assert filter_reason("short", f) == "too_short"
    assert filter_reason("x" * 201, f) == "too_long"
    assert filter_reason("spam spam " * 15, f) == "repetition"
    assert filter_reason("same line\n" * 5 + "other", f) == "repetition"
    assert filter_reason("#$%^&*()!@ {}[]<>?", f) == "symbols"
    assert filter_reason("Cookie policy and terms of use apply here", f) == "boilerplate"
    assert filter_reason("A perfectly ordinary sentence about rivers and stones.", f) is None
    assert repetition_fraction("a b c d") == 0.0
    assert symbol_fraction("ab+?") == 0.5
    assert boilerplate_fraction("ok line\nclick here now", ["click here"]) == 0.5


def test_fast_filters_equal_their_per_character_definitions():
    """symbol_fraction and repetition_fraction run in C (regex, str.split, zip); they must give the
    per-character / per-n-gram definitions' values exactly, for every kind of character."""
    import random
    from collections import Counter

    def symbols(text: str) -> float:
        visible = [c for c in text if not c.isspace()]
        return sum(1 for c in visible if not c.isalnum()) / len(visible) if visible else 0.0

    def repetition(text: str) -> float:   # the Gopher rules as first written, n-grams from slices
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        counts = Counter(lines)
        score = sum(len(line) * (n - 1) for line, n in counts.items() if n > 1) / (sum(map(len, lines)) or 1)
        words = re.findall(r"\w+", text.lower())
        if len(words) >= 20:
            for n in (2, 3, 4):
                gram, count = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1)).most_common(1)[0]
                if count > 1:
                    score = max(score, count * sum(len(w) for w in gram) / (sum(map(len, words)) or 1))
        return score

    rng = random.Random(0)
    pool = [chr(c) for c in range(0x3000)] + ["\u3000", "\u2028", "\x1c", "\x85", "\u00a0", "\u200b", "\U0001F600"]
    for i in range(3000):
        if i % 2:
            text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 120)))
        else:
            text = " ".join(rng.choice(["a", "b", "c", "dd", "_", "x1", "\n"]) for _ in range(rng.randint(0, 60)))
        assert symbol_fraction(text) == symbols(text), repr(text)
        assert repetition_fraction(text) == repetition(text), repr(text)


def test_filter_reason_decides_as_comparing_every_score_with_its_limit():
    """filter_reason skips a score that cannot exceed its limit (a bound on the n-gram repetition,
    fractions of at most 1); its decisions must be those of computing every score, at every limit,
    on texts where the bound prunes and where it does not."""
    import random

    def reference(text: str, f: FilterConfig) -> str | None:
        if len(text) < f.min_chars:
            return "too_short"
        if len(text) > f.max_chars:
            return "too_long"
        for reason, score, limit in (("repetition", repetition_fraction(text), f.max_repetition),
                                     ("symbols", symbol_fraction(text), f.max_symbol_fraction),
                                     ("boilerplate", boilerplate_fraction(text, f.boilerplate_phrases),
                                      f.max_boilerplate_fraction)):
            if score > limit:
                return reason
        return None

    rng = random.Random(1)
    vocab = ["a", "bb", "ccc", "river", "stone", "of", "the", "x_y", "#!", "click here", "\n", "Zz9"]
    limits = [0.0, 0.05, 0.2, 0.3, 0.5, 0.8, 0.99, 1.0]
    seen = set()
    for _ in range(4000):
        if rng.random() < 0.5:
            words = [rng.choice(vocab[:rng.randint(2, len(vocab))]) for _ in range(rng.randint(0, 120))]
        else:   # a phrase repeated with some words changed: long n-grams that repeat
            phrase = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
            words = [w if rng.random() < 0.8 else rng.choice(vocab) for _ in range(rng.randint(1, 30))
                     for w in phrase]
        text = " ".join(words)
        f = FilterConfig(max_repetition=rng.choice(limits), max_symbol_fraction=rng.choice(limits),
                         max_boilerplate_fraction=rng.choice(limits))
        assert filter_reason(text, f) == reference(text, f), (text, f)
        seen.add(reference(text, f))
    assert seen == {None, "too_short", "repetition", "symbols", "boilerplate"}


def parse_file(path, schema: str = "text", data: DataConfig | None = None, **source) -> list[dict]:
    """Every row the read tasks make of one file (the read plan, the streaming reader and the parser)."""
    data = data or DataConfig(dedup=DedupConfig(num_perm=16))
    files = resolve_source(0, SourceConfig(path=str(path), schema=schema, **source))
    fs, fs_path = storage.filesystem(files.files[0])
    parser = ParseUnits([files.config], [fs], data, signatures=True)
    units = plan_file(0, 0, fs_path, files.formats[0], files.config.text_unit, files.sizes[0], fs,
                      data.read_block_bytes, data.max_file_bytes)
    rows = []
    for unit in units:
        import dataclasses

        for table in parser(pa.Table.from_pylist([dataclasses.asdict(unit)])):
            rows += table.to_pylist()
    return rows


def _parse(tmp_path, name: str, data: bytes, schema: str = "text", **source) -> list[dict]:
    path = tmp_path / name
    path.write_bytes(data)
    return parse_file(path, schema, **source)


def test_parser_quarantines_bad_lines_and_keys_good_ones(tmp_path):
    lines = [json.dumps({"text": "first document here"}).encode(), b'{"text": "unterminated', b"",
             json.dumps({"nope": 1}).encode(), b'{"text": "caf\xe9"}', json.dumps({"text": "last one"}).encode()]
    rows = _parse(tmp_path, "a.jsonl", b"\n".join(lines) + b"\n")
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    assert [(locate(r["doc_id"])[2], r["status"], r["reason"]) for r in rows] == [
        (offsets[0], "ok", None), (offsets[1], "bad", "malformed_json"), (offsets[3], "bad", "schema"),
        (offsets[4], "bad", "not_utf8"), (offsets[5], "ok", None)]
    ok = rows[0]
    assert json.loads(ok["payload"]) == {"text": "first document here"}
    assert len(ok["exact"]) == 16 and len(ok["signature"]) == 16 * 4
    assert "\\xe9" in rows[3]["raw"] and rows[1]["raw"].startswith('{"text"')


def test_parser_reads_gzip_parquet_and_text_units(tmp_path):
    gz = _parse(tmp_path, "a.jsonl.gz", gzip.compress(b'{"text": "zipped text"}\n'))
    assert [r["status"] for r in gz] == ["ok"]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]}),
                   sink)
    chat = _parse(tmp_path, "c.parquet", sink.getvalue().to_pybytes(), schema="messages")
    assert json.loads(chat[0]["payload"])["messages"][1] == {"role": "assistant", "content": "a"}
    paragraphs = _parse(tmp_path, "b.txt", b"one para\nstill one\n\n  \n\ntwo para\n", text_unit="paragraph")
    assert [json.loads(r["payload"])["text"] for r in paragraphs] == ["one para\nstill one", "two para"]
    broken = _parse(tmp_path, "d.parquet", b"PAR1 not really parquet", schema="messages")
    assert [(r["status"], r["reason"]) for r in broken] == [("bad", "unreadable_file")]


def test_source_resolution_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match=r"data.sources\[0\].path"):
        resolve_source(0, SourceConfig(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(UserError, match="no data files"):
        resolve_source(0, SourceConfig(path=str(tmp_path / "empty")))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="needs jsonl or parquet"):
        resolve_source(0, SourceConfig(path=str(tmp_path / "notes.txt"), schema="messages"))
