"""The safety seed set and its mixing into SFT (no Ray): the checked-in files are what the generator
writes, held-out prompts never reach training, refusals are what eval's probe detects, seed rows
follow the SFT shard contract, the mix keeps the configured ratio, bad pairs are quarantined."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from rayloom.align.safety_mix import MixRows, build_safety_rows, load_safety_records
from rayloom.align.safety_seed import (
    EVAL_FILE,
    PREFERENCE_FILE,
    SFT_FILE,
    build_seed_set,
    default_dir,
    write_seed_set,
)
from rayloom.config import compose
from rayloom.data.records import BadRecord, validate
from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS
from rayloom.errors import UserError
from rayloom.eval.generation import is_refusal


@pytest.fixture(scope="module")
def seed_set():
    return build_seed_set()


def test_checked_in_seed_set_is_the_generators_output(tmp_path):
    write_seed_set(tmp_path)
    for name in (SFT_FILE, PREFERENCE_FILE, EVAL_FILE):
        assert (tmp_path / name).read_bytes() == (default_dir() / name).read_bytes(), (
            f"conf/safety/{name} is stale: run `python -m rayloom.align.safety_seed`")


def test_held_out_prompts_never_reach_training(seed_set):
    trained = {r["prompt"] for r in seed_set[PREFERENCE_FILE]}
    trained |= {r["messages"][0]["content"] for r in seed_set[SFT_FILE]}
    held_out = [r["prompt"] for r in seed_set[EVAL_FILE]]
    assert held_out and not trained & set(held_out)
    harmful = [r for r in seed_set[EVAL_FILE] if r["should_refuse"]]
    assert 0 < len(harmful) < len(held_out)  # both harmful requests and benign look-alikes


def test_refusals_are_what_the_eval_probe_detects(seed_set):
    for record in seed_set[PREFERENCE_FILE]:
        chosen_refuses, rejected_refuses = is_refusal(record["chosen"]), is_refusal(record["rejected"])
        assert chosen_refuses == record["harmful"] and rejected_refuses == (not record["harmful"]), record
    for record in seed_set[SFT_FILE]:
        assert is_refusal(record["messages"][1]["content"]) == record["harmful"]


def test_seed_records_pass_the_data_pipelines_validation(seed_set):
    for record in seed_set[PREFERENCE_FILE]:
        validate(record, "preference", "text", "NFC")
    for record in seed_set[SFT_FILE]:
        validate(record, "messages", "text", "NFC")


@pytest.mark.parametrize("record, detail", [
    ({"prompt": "Hi?", "rejected": "no"}, "missing field 'chosen'"),
    ({"prompt": "Hi?", "chosen": "yes", "rejected": "yes"}, "identical"),
    ({"prompt": "Hi?", "chosen": " yes\r\n", "rejected": "yes"}, "identical"),
    ({"prompt": "Hi?", "chosen": [{"role": "assistant", "content": "yes"}], "rejected": "yes"}, "identical"),
    ({"prompt": "Hi?", "chosen": "", "rejected": "no"}, "empty"),
])
def test_bad_pairs_are_quarantined(record, detail):
    with pytest.raises(BadRecord, match=detail) as info:
        validate(record, "preference", "text", "NFC")
    assert info.value.reason in ("schema", "empty")


def test_safety_rows_follow_the_sft_contract(tiny_model_dir):
    from transformers import AutoTokenizer

    cfg = compose("train", ["model=tiny-2l", "objective=safety_sft"])
    table = build_safety_rows(cfg, seq_len=128)
    assert table.column_names == list(LM_COLUMNS) and table.num_rows == 120
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    refusals = 0
    for row in table.slice(0, 20).to_pylist():
        assert len(row["input_ids"]) == 128 and row["labels"][0] == IGNORE_INDEX
        trained = tok.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX])
        assert trained.endswith("<|end|>") and "user" not in trained.lower()
        refusals += is_refusal(trained)
    assert 0 < refusals < 20


def test_mixing_keeps_the_ratio_and_is_deterministic(tiny_model_dir):
    cfg = compose("train", ["model=tiny-2l", "objective=safety_sft"])
    safety = build_safety_rows(cfg, seq_len=128)
    base = pa.table({c: [[7] * 128 for _ in range(64)] for c in LM_COLUMNS})
    mix = MixRows(safety, ratio=0.2, seed=0)
    total = added = 0
    for block in range(40):
        batch = base.set_column(0, "input_ids", pa.array([[block, i] + [7] * 126 for i in range(64)]))
        out = mix(batch)
        assert out.column_names == list(LM_COLUMNS)
        total += out.num_rows
        added += out.num_rows - 64
        assert out.equals(mix(batch))
    assert added / total == pytest.approx(0.2, abs=0.02)


def test_bad_safety_data_names_the_file_and_line(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match=r"seed.jsonl:1: bad safety record \(schema\)"):
        load_safety_records(str(path))
    with pytest.raises(UserError, match="objective.safety_data"):
        load_safety_records(str(tmp_path / "missing.jsonl"))
