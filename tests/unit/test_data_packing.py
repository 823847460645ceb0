"""Packing and the deterministic per-record plan (no Ray); dedup is tests/unit/test_data_dedup.py."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rayloom.data.packing import pack_lm, pad_preference, plan_rows
from rayloom.data.record_ids import is_validation, locate, num_copies, record_id, source_of
from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS, PREFERENCE_COLUMNS


def _docs(lengths, start=10):
    ids = [np.arange(start + 100 * i, start + 100 * i + n, dtype=np.int32) for i, n in enumerate(lengths)]
    return ids, [np.ones(n, dtype=np.int8) for n in lengths]


def test_best_fit_packing_never_splits_or_overfills():
    rng = random.Random(1)
    lengths = [rng.randint(1, 32) for _ in range(200)]
    rows = plan_rows(lengths, 32, packing=True)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 32 for row in rows)
    # Best-fit decreasing: within 11/9 of the optimum, and denser than filling rows in arrival order.
    assert len(rows) <= 11 / 9 * np.ceil(sum(lengths) / 32) + 1
    sequential, room = 0, 0
    for n in lengths:
        if n > room:
            sequential, room = sequential + 1, 32
        room -= n
    assert len(rows) < sequential
    assert plan_rows([5, 7], 32, packing=False) == [[0], [1]]


def test_packed_rows_restart_positions_and_never_label_across_documents():
    ids, masks = _docs([5, 3, 7, 2])
    masks[1] = np.asarray([0, 1, 1], dtype=np.int8)        # a chat piece: first token untrained
    table, stats = pack_lm(ids, masks, seq_len=10, pad_id=0, packing=True, row_seed=0)
    assert table.column_names == list(LM_COLUMNS)
    assert stats.real_tokens == 17 and stats.slots == stats.rows * 10 and stats.documents == 4
    seen = []
    for row in table.to_pylist():
        tokens, labels, pos, attn = (row[c] for c in LM_COLUMNS)
        assert len(tokens) == len(labels) == len(pos) == len(attn) == 10
        real = sum(attn)
        assert attn == [1] * real + [0] * (10 - real) and tokens[real:] == [0] * (10 - real)
        assert labels[real:] == [IGNORE_INDEX] * (10 - real)
        starts = [i for i in range(real) if pos[i] == 0]
        for a, b in zip(starts, [*starts[1:], real], strict=True):
            assert pos[a:b] == list(range(b - a))
            assert labels[a] == IGNORE_INDEX                  # never predicts the next document's start
            seen.append(tokens[a:b])
    assert sorted(map(tuple, seen)) == sorted(tuple(d.tolist()) for d in ids)
    chat = next(row for row in table.to_pylist() for i in range(10) if row["input_ids"][i] == ids[1][0])
    k = chat["input_ids"].index(int(ids[1][0]))
    assert chat["labels"][k:k + 3] == [IGNORE_INDEX, int(ids[1][1]), int(ids[1][2])]


def test_no_packing_pads_one_document_per_row():
    ids, masks = _docs([4, 6])
    table, stats = pack_lm(ids, masks, seq_len=8, pad_id=9, packing=False, row_seed=3)
    assert stats.rows == 2 and stats.real_tokens == 10
    for row in table.to_pylist():
        n = sum(row["attention_mask"])
        assert row["input_ids"][n:] == [9] * (8 - n) and row["position_ids"][:n] == list(range(n))


def test_preference_rows_score_only_the_response():
    table, stats = pad_preference([np.arange(1, 6, dtype=np.int32)], [np.asarray([0, 0, 0, 1, 1], np.int8)],
                                  [np.arange(1, 5, dtype=np.int32)], [np.asarray([0, 0, 0, 1], np.int8)],
                                  seq_len=8, pad_id=0)
    row = table.to_pylist()[0]
    assert table.column_names == list(PREFERENCE_COLUMNS)
    assert row["chosen_labels"] == [IGNORE_INDEX] * 3 + [4, 5] + [IGNORE_INDEX] * 3
    assert row["rejected_labels"] == [IGNORE_INDEX] * 3 + [4] + [IGNORE_INDEX] * 4
    assert row["rejected_attention_mask"] == [1, 1, 1, 1, 0, 0, 0, 0]


def test_plan_is_deterministic_and_follows_weights():
    ids = np.asarray([record_id(2, f, r) for f in range(4) for r in range(5000)], dtype=np.int64)
    assert locate(int(ids[7])) == (2, 0, 7) and set(source_of(ids)) == {2}
    for weight in (0.25, 1.0, 2.5):
        copies = num_copies(ids, np.full(len(ids), weight), seed=0)
        assert copies.mean() == pytest.approx(weight, abs=0.03)
        assert np.array_equal(copies, num_copies(ids, np.full(len(ids), weight), seed=0))
    val = is_validation(ids, 0.1, seed=0)
    assert val.mean() == pytest.approx(0.1, abs=0.02)
    assert not np.array_equal(val, is_validation(ids, 0.1, seed=1))
    forced = is_validation(ids[:3], 0.0, seed=0, forced=ids[1:2])
    assert forced.tolist() == [False, True, False]


def test_preference_rows_from_records_label_only_the_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    from rayloom.data.packing import preference_rows

    rows = preference_rows(tiny_model_dir, [{"prompt": "2 + 2 =", "chosen": "4", "rejected": "5"}], seq_len=48)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert len(rows) == 1 and set(rows[0]) == set(PREFERENCE_COLUMNS)
    for side, answer in (("chosen", "4"), ("rejected", "5")):
        ids, labels = rows[0][f"{side}_input_ids"], rows[0][f"{side}_labels"]
        assert len(ids) == 48
        scored = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])
        assert scored.startswith(answer), scored
