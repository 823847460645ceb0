"""The typed manifest: reads the JSON every rayloom version wrote (partial ones too), writes it back
unchanged, and names a key it does not know."""

from __future__ import annotations

import json

import pytest

from rayloom import storage
from rayloom.data import Manifest, read_manifest
from rayloom.data.schema import SourceEntry, SplitStats, StageCounts, TokenStats
from rayloom.errors import UserError

WRITTEN = {  # a materialised manifest as `rayloom data` writes it
    "format_version": 1, "kind": "lm", "name": "web", "seq_len": 128, "packing": True,
    "sources": [{"uri": "/src/web", "schema": "text", "format": "jsonl", "weight": 1.0,
                 "files": [{"path": "part-0.jsonl", "size": 10}], "read": 5, "bad": 1, "kept": 3, "sampled": 3}],
    "tokenizer_hash": "t" * 64, "pad_id": 0, "config_hash": "c" * 64, "quarantine": "/out.quarantine.jsonl",
    "materialized": True,
    "splits": {"train": {"rows": 2, "tokens": 200, "slots": 256, "documents": 3, "files": ["train/a.parquet"]},
               "validation": {"rows": 0, "tokens": 0, "slots": 0, "documents": 0, "files": []}},
    "counts": {"read": 5, "bad": 1, "filtered": 0, "deduped": 1, "kept": 3, "sampled": 3, "tokenized": 3, "rows": 2},
    "drops": {"exact_duplicate": 1, "not_utf8": 1},
    "tokens": {"real": 200, "slots": 256, "packing_efficiency": 0.78125, "truncated_records": 0},
    "content_hash": "h" * 64,
}


def test_a_written_manifest_reads_typed_and_writes_back_the_same_json():
    manifest = Manifest.from_dict(json.loads(json.dumps(WRITTEN)))
    assert manifest.splits["train"] == SplitStats(rows=2, tokens=200, slots=256, documents=3,
                                                  files=["train/a.parquet"])
    assert manifest.sources[0].files[0].path == "part-0.jsonl" and isinstance(manifest.sources[0], SourceEntry)
    assert manifest.counts == StageCounts(read=5, bad=1, deduped=1, kept=3, sampled=3, tokenized=3, rows=2)
    assert manifest.tokens == TokenStats(real=200, slots=256, packing_efficiency=0.78125)
    assert manifest.stream is None
    assert {k: v for k, v in manifest.to_dict().items() if k != "stream"} == WRITTEN


def test_a_partial_manifest_gets_defaults():
    # What test fixtures and older writers leave out (name, tokens, per-split slots) is optional.
    manifest = Manifest.from_dict({"kind": "preference", "seq_len": 64, "splits": {"train": {"rows": 4, "files": []}},
                                   "sources": [], "counts": {}, "drops": {}})
    assert manifest.kind == "preference" and manifest.splits["train"].rows == 4 and manifest.tokens is None
    assert manifest.materialized and manifest.counts.read == 0


def test_an_unknown_key_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"manifest\.splits\.train: unknown key\(s\) rowz"):
        Manifest.from_dict({"splits": {"train": {"rowz": 1}}})
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps({"kind": "lm", "colour": "red"}))
    output = storage.commit_dir(str(staged), str(tmp_path / "out"))
    with pytest.raises(UserError, match="colour"):
        read_manifest(output)


def test_no_committed_shards_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="run `rayloom data` first"):
        read_manifest(str(tmp_path))
