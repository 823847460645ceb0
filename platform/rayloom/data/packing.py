"""Pack tokenized documents into fixed `seq_len` rows, keeping document boundaries.

Best-fit decreasing bin packing: each document (already cut to at most seq_len tokens) goes into
the fullest row it still fits in, so rows are dense without splitting a document across rows.
Position ids restart at every document, and each document's first label is IGNORE_INDEX, so no
label crosses from one document into the next. `packing=False` gives one padded row per document.

Hand-written because the libraries that pack (TRL's `pack_dataset`, HF `group_texts`) either cut
documents at row ends or work on whole in-memory datasets; this runs per shard group inside Ray.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS, PREFERENCE_COLUMNS


@dataclass
class PackStats:
    rows: int = 0
    documents: int = 0
    real_tokens: int = 0
    slots: int = 0

    @property
    def efficiency(self) -> float:
        return self.real_tokens / self.slots if self.slots else 0.0


def plan_rows(lengths: list[int], seq_len: int, packing: bool) -> list[list[int]]:
    """Indices of the documents in each row (best-fit decreasing; input order breaks ties)."""
    assert all(0 < n <= seq_len for n in lengths), "documents must be cut to seq_len before packing"
    if not packing:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining slots, row index), sorted
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        size = lengths[i]
        pos = bisect.bisect_left(free, (size, -1))
        if pos < len(free):
            remaining, row = free.pop(pos)
            rows[row].append(i)
        else:
            row, remaining = len(rows), seq_len
            rows.append([i])
        remaining -= size
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    # Documents inside a row keep their input order (the shuffled order the caller chose).
    return [sorted(row) for row in rows]


def _fixed_lists(flat: np.ndarray, num_rows: int, seq_len: int, dtype: pa.DataType) -> pa.Array:
    offsets = pa.array(np.arange(0, (num_rows + 1) * seq_len, seq_len, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, type=dtype))


def _labels(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    labels = np.where(np.asarray(mask, dtype=bool), ids, IGNORE_INDEX).astype(np.int32)
    labels[0] = IGNORE_INDEX  # a document's first token never predicts across a boundary
    return labels


def pack_lm(input_ids: list[np.ndarray], loss_masks: list[np.ndarray], seq_len: int, pad_id: int, packing: bool,
            row_seed: int) -> tuple[pa.Table, PackStats]:
    """LM rows (schema.LM_COLUMNS) from documents and their loss masks; row order shuffled by `row_seed`."""
    rows = plan_rows([len(ids) for ids in input_ids], seq_len, packing)
    order = np.random.default_rng(row_seed).permutation(len(rows)) if len(rows) > 1 else np.arange(len(rows))
    num_rows = len(rows)
    ids_out = np.full((num_rows, seq_len), pad_id, dtype=np.int32)
    labels_out = np.full((num_rows, seq_len), IGNORE_INDEX, dtype=np.int32)
    pos_out = np.zeros((num_rows, seq_len), dtype=np.int32)
    mask_out = np.zeros((num_rows, seq_len), dtype=np.int8)
    # Scatter every document at once (no per-document numpy calls): documents in output order,
    # each at its row's start plus the lengths of the documents before it in that row.
    placed = [doc for row_idx in order for doc in rows[row_idx]]
    real = 0
    if placed:
        lengths = np.fromiter((len(input_ids[d]) for d in placed), dtype=np.int64, count=len(placed))
        per_row = np.fromiter((len(rows[r]) for r in order), dtype=np.int64, count=num_rows)
        row_of_doc = np.repeat(np.arange(num_rows, dtype=np.int64), per_row)
        doc_start = np.cumsum(lengths) - lengths                      # in the concatenation
        row_first_doc = np.cumsum(per_row) - per_row
        offset_in_row = doc_start - doc_start[row_first_doc][row_of_doc]
        total = int(lengths.sum())
        pos = np.arange(total, dtype=np.int64) - np.repeat(doc_start, lengths)
        dest = np.repeat(row_of_doc * seq_len + offset_in_row, lengths) + pos
        ids = np.concatenate([input_ids[d] for d in placed]).astype(np.int32, copy=False)
        trained = np.concatenate([loss_masks[d] for d in placed]).astype(bool)
        trained[doc_start] = False  # a document's first token never predicts across a boundary
        ids_out.ravel()[dest] = ids
        labels_out.ravel()[dest] = np.where(trained, ids, IGNORE_INDEX)
        pos_out.ravel()[dest] = pos
        mask_out.ravel()[dest] = 1
        real = total
    columns = [
        _fixed_lists(ids_out.ravel(), num_rows, seq_len, pa.int32()),
        _fixed_lists(labels_out.ravel(), num_rows, seq_len, pa.int32()),
        _fixed_lists(pos_out.ravel(), num_rows, seq_len, pa.int32()),
        _fixed_lists(mask_out.ravel(), num_rows, seq_len, pa.int8()),
    ]
    stats = PackStats(rows=num_rows, documents=len(input_ids), real_tokens=real, slots=num_rows * seq_len)
    return pa.table(dict(zip(LM_COLUMNS, columns, strict=True))), stats


def pad_preference(chosen_ids: list[np.ndarray], chosen_masks: list[np.ndarray], rejected_ids: list[np.ndarray],
                   rejected_masks: list[np.ndarray], seq_len: int, pad_id: int) -> tuple[pa.Table, PackStats]:
    """Preference rows (schema.PREFERENCE_COLUMNS): each side right-padded to seq_len."""
    num_rows = len(chosen_ids)
    columns = []
    real = 0
    for ids_list, masks in ((chosen_ids, chosen_masks), (rejected_ids, rejected_masks)):
        ids_out = np.full((num_rows, seq_len), pad_id, dtype=np.int32)
        labels_out = np.full((num_rows, seq_len), IGNORE_INDEX, dtype=np.int32)
        mask_out = np.zeros((num_rows, seq_len), dtype=np.int8)
        for row, (ids, mask) in enumerate(zip(ids_list, masks, strict=True)):
            n = len(ids)
            ids_out[row, :n] = ids
            labels_out[row, :n] = _labels(ids, mask)
            mask_out[row, :n] = 1
            real += n
        columns += [_fixed_lists(ids_out.ravel(), num_rows, seq_len, pa.int32()),
                    _fixed_lists(labels_out.ravel(), num_rows, seq_len, pa.int32()),
                    _fixed_lists(mask_out.ravel(), num_rows, seq_len, pa.int8())]
    stats = PackStats(rows=num_rows, documents=num_rows, real_tokens=real, slots=2 * num_rows * seq_len)
    return pa.table(dict(zip(PREFERENCE_COLUMNS, columns, strict=True))), stats


def preference_rows(tokenizer_dir, records: list[dict], seq_len: int) -> list[dict]:
    """{prompt, chosen, rejected} records (prompt a user message) -> preference rows as the data job
    writes them (chat template, assistant-only masks, each side right-padded to seq_len), for the
    tests and benchmarks that train on pairs without running the data job first."""
    from transformers import AutoTokenizer  # here: transformers only when rows are built

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def encode(prompt: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return np.asarray(enc["input_ids"][:seq_len], np.int32), np.asarray(enc["assistant_masks"][:seq_len], np.int8)

    chosen = [encode(r["prompt"], r["chosen"]) for r in records]
    rejected = [encode(r["prompt"], r["rejected"]) for r in records]
    table, _ = pad_preference([c[0] for c in chosen], [c[1] for c in chosen], [r[0] for r in rejected],
                              [r[1] for r in rejected], seq_len, tok.pad_token_id)
    return table.to_pylist()
