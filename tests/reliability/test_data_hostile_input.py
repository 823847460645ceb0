"""`rayloom data` on hostile input and next to user files: the job completes, every bad record is a
quarantined row with its reason (exact counts), a gzip bomb is refused by reason, and nothing the
user put beside or inside the output and quarantine paths is touched."""

from __future__ import annotations

import dataclasses
import json
import random
import zlib
from pathlib import Path

import pytest

from rayloom import storage
from rayloom.config import SourceConfig, compose
from rayloom.data import read_manifest, run_data_job
from rayloom.errors import UserError

pytestmark = pytest.mark.reliability

_WORDS = ("river stone light window garden paper music silver forest ocean bridge market winter candle engine "  # noqa: SIM905
          "travel mirror basket violet harbor ladder planet thunder velvet orchard meadow lantern compass").split()
GOOD = 90
HOSTILE = {
    b'{"text": "a \\ud800 lone surrogate escape"}': "not_utf8",
    b"[" * 10_000 + b"]" * 10_000: "malformed_json",
    b'{"text": "a NUL \\u0000 character"}': "nul_byte",
    b'{"text": "a raw NUL \x00 byte"}': "malformed_json",
    b'{"text": "caf\xe9 au lait"}': "not_utf8",
    b'{"text": "' + b"y" * 2_500_000 + b'"}': "too_large",
}


def _corpus(root: Path) -> tuple[list[dict], dict[str, int]]:
    rng = random.Random(11)
    good = [json.dumps({"text": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 60)))}).encode()
            for _ in range(GOOD)]
    lines = good[:45] + list(HOSTILE) + good[45:]
    (root / "web").mkdir(parents=True)
    (root / "web" / "hostile.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # ~200 MB of newlines, cut at data.max_file_bytes (3 MB: the limit bounds the work, not just memory)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(b"\n" * (1 << 20)) for _ in range(200)) + compressor.flush()
    (root / "web" / "bomb.jsonl.gz").write_bytes(bomb)
    (root / "chat").mkdir()
    (root / "chat" / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    expected: dict[str, int] = {}
    for reason in [*HOSTILE.values(), "file_too_large", "unreadable_file"]:
        expected[reason] = expected.get(reason, 0) + 1
    sources = [{"path": str(root / "web"), "schema": "text"}, {"path": str(root / "chat"), "schema": "messages"}]
    return sources, expected


def _cfg(root: Path, sources: list[dict], **data):
    cfg = compose("data", ["model=tiny-2l", "data.name=hostile", "data.seq_len=64", "data.progress_bars=false",
                           "data.demo=''", "data.val_fraction=0.1", f"storage.root={root / 'runs'}",
                           "data.max_record_bytes=1000000", "data.max_file_bytes=3000000"])
    fields = {"sources": [SourceConfig(**s) for s in sources], **data}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **fields))


def test_hostile_records_are_quarantined_and_the_job_completes(tmp_path, ray_local):
    sources, expected = _corpus(tmp_path / "src")
    out_parent = tmp_path / "runs" / "data"
    out_parent.mkdir(parents=True)
    (out_parent / "notes.txt").write_text("beside the output")             # a user file beside the output
    result = run_data_job(_cfg(tmp_path, sources))
    manifest = read_manifest(result.output)
    assert manifest.counts.read == GOOD + sum(expected.values())
    assert manifest.counts.bad == sum(expected.values())
    assert {k: manifest.drops[k] for k in expected} == expected
    assert manifest.counts.kept == GOOD                                     # every good row is out
    bad = [json.loads(line) for line in Path(result.quarantine).read_text().splitlines()]
    got: dict[str, int] = {}
    for row in bad:
        got[row["reason"]] = got.get(row["reason"], 0) + 1
    assert got == expected
    bomb = next(r for r in bad if r["reason"] == "file_too_large")
    assert bomb["file"].endswith("bomb.jsonl.gz") and "max_file_bytes" in bomb["detail"]
    assert (out_parent / "notes.txt").read_text() == "beside the output"

    # A clean rerun into the same output removes only its own quarantine file.
    clean = [{"path": str(tmp_path / "src" / "web" / "hostile.jsonl"), "schema": "text"}]
    (tmp_path / "src" / "web" / "hostile.jsonl").write_bytes(
        b"\n".join(line for line in (tmp_path / "src" / "web" / "hostile.jsonl").read_bytes().split(b"\n")
                   if line not in HOSTILE) + b"\n")
    again = run_data_job(_cfg(tmp_path, clean))
    assert again.quarantine is None and not Path(result.quarantine).exists()
    assert read_manifest(again.output).counts.kept == GOOD
    assert (out_parent / "notes.txt").read_text() == "beside the output"


def test_user_files_at_the_output_and_quarantine_paths_survive(tmp_path, ray_local):
    sources = [{"path": str(tmp_path / "in" / "src.jsonl"), "schema": "text"}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "src.jsonl").write_text(json.dumps({"text": "a perfectly ordinary line of text"}) + "\n")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("keep")
    (user / "manifest.json").write_text('{"name": "webapp"}')              # not a rayloom manifest
    cases = [
        ({"output": str(user)}, "not written by rayloom"),                  # inside the output path
        ({"output": str(tmp_path / "ok"), "quarantine": str(user)}, "directory"),
        ({"output": str(tmp_path / "ok"), "quarantine": str(user / "thesis.tex")}, "not a rayloom quarantine"),
        ({"output": str(tmp_path / "in")}, "input"),                        # an ancestor of its own input
        ({"output": str(tmp_path / "runs")}, "storage root"),
    ]
    for data, message in cases:
        with pytest.raises(UserError, match=message):
            run_data_job(_cfg(tmp_path, sources, **data))
        assert (user / "thesis.tex").read_text() == "keep"
        assert (user / "manifest.json").read_text() == '{"name": "webapp"}'
    assert not storage.exists(str(tmp_path / "ok"))


def test_a_failed_rebuild_keeps_the_previous_dataset_readable(tmp_path, ray_local, monkeypatch):
    import rayloom.data.shard_writer as shard_writer
    from rayloom.data import open_shards

    sources, _ = _corpus(tmp_path / "src")
    sources = [{"path": str(tmp_path / "src" / "web" / "hostile.jsonl"), "schema": "text"}]
    first = run_data_job(_cfg(tmp_path, sources))
    before = read_manifest(first.output)
    rows_before = open_shards(first.output)["train"].count()

    real = shard_writer.write_shards

    def write_then_fail(records, job, manifest, destination, summary):
        real(records, job, manifest, destination, summary)      # every shard written into the new version ...
        raise RuntimeError("the job dies before it publishes")   # ... then the job dies

    monkeypatch.setattr(shard_writer, "write_shards", write_then_fail)
    with pytest.raises(RuntimeError, match="dies"):
        run_data_job(_cfg(tmp_path, sources, seed=1))
    assert read_manifest(first.output) == before                 # still the previous version, whole
    assert open_shards(first.output)["train"].count() == rows_before
    monkeypatch.setattr(shard_writer, "write_shards", real)
    again = run_data_job(_cfg(tmp_path, sources, seed=1))        # and the next run takes over
    assert read_manifest(again.output).config_hash != before.config_hash
    assert len(storage.list_versions(again.output)) == 2         # the previous one kept for rollback
