"""Helpers for the training tests: contract-conformant shards written here (pyarrow Parquet +
manifest.json + storage.commit_dir), so the trainer is tested without waiting for the data pipeline.

Imported by tests/unit/test_train_*.py and tests/integration/test_train_*.py as
`from helpers.train_fixtures import ...` (tests/ is on sys.path).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

IGNORE_INDEX = -100


def pack_documents(docs: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> list[dict]:
    """Pack (ids, labels) documents into rows of exactly seq_len, as rayloom.data.schema specifies:
    position_ids restart per document, the first label of each document is IGNORE_INDEX (no label
    crosses documents), padding is on the right with IGNORE_INDEX labels and attention_mask 0."""
    rows, cur = [], {"input_ids": [], "labels": [], "position_ids": [], "attention_mask": []}

    def flush():
        if not cur["input_ids"]:
            return
        pad = seq_len - len(cur["input_ids"])
        rows.append({
            "input_ids": cur["input_ids"] + [pad_id] * pad,
            "labels": cur["labels"] + [IGNORE_INDEX] * pad,
            "position_ids": cur["position_ids"] + [0] * pad,
            "attention_mask": cur["attention_mask"] + [0] * pad,
        })
        for key in cur:
            cur[key] = []

    for ids, labels in docs:
        ids, labels = ids[:seq_len], labels[:seq_len]
        if len(cur["input_ids"]) + len(ids) > seq_len:
            flush()
        cur["input_ids"] += ids
        cur["labels"] += [IGNORE_INDEX] + labels[1:]
        cur["position_ids"] += list(range(len(ids)))
        cur["attention_mask"] += [1] * len(ids)
    flush()
    return rows


def pretrain_rows(tokenizer_dir, seq_len: int = 64, max_rows: int = 64) -> list[dict]:
    """Packed pre-training rows from the offline corpus (CPython's help topics)."""
    from transformers import AutoTokenizer

    from rayloom.models.tokenizer_kit import offline_corpus

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = []
    for text in offline_corpus():
        for paragraph in text.split("\n\n"):
            paragraph = paragraph.strip()
            if len(paragraph) < 40:
                continue
            ids = tok(paragraph)["input_ids"] + [tok.eos_token_id]
            docs.append((ids, ids))
            if len(docs) >= max_rows * 4:
                break
        if len(docs) >= max_rows * 4:
            break
    return pack_documents(docs, seq_len, tok.pad_token_id)[:max_rows]


def sft_rows(tokenizer_dir, seq_len: int = 64, num: int = 32) -> list[dict]:
    """Chat rows whose labels keep only assistant tokens (the assistant-only loss mask)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = []
    for i in range(num):
        a, b = i % 10, (3 * i) % 10
        messages = [{"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]
        enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        labels = [t if m else IGNORE_INDEX for t, m in zip(ids, enc["assistant_masks"], strict=True)]
        docs.append((ids, labels))
    # One conversation per row, as chat SFT shards are.
    rows = []
    for ids, labels in docs:
        rows += pack_documents([(ids, labels)], seq_len, tok.pad_token_id)
    return rows


def write_shards(out_uri: str, train_rows: list[dict], val_rows: list[dict] | None = None, *, seq_len: int,
                 kind: str = "lm", rows_per_file: int = 16, tokenizer_hash: str = "") -> str:
    """Write Parquet shards + manifest.json and publish them with storage.commit_dir (no tokenizer
    hash unless one is given: training then does not check the shards against its model's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayloom import storage

    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("position_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8()))])
    with tempfile.TemporaryDirectory() as tmp:
        splits = {}
        for split, rows in (("train", train_rows), ("validation", val_rows or [])):
            if not rows:
                continue
            (Path(tmp) / split).mkdir()
            files = []
            for i in range(0, len(rows), rows_per_file):
                name = f"{split}/part-{i // rows_per_file:05d}.parquet"
                pq.write_table(pa.Table.from_pylist(rows[i:i + rows_per_file], schema=schema), Path(tmp) / name)
                files.append(name)
            splits[split] = {"rows": len(rows), "tokens": sum(sum(r["attention_mask"]) for r in rows), "files": files}
        manifest = {"kind": kind, "seq_len": seq_len, "splits": splits, "sources": [], "counts": {}, "drops": {},
                    "tokenizer_hash": tokenizer_hash, "config_hash": "", "content_hash": ""}
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
        return storage.commit_dir(tmp, out_uri)


def train_overrides(root, *extra: str) -> list[str]:
    """Small, fast settings shared by the training tests (tiny-2l, 64-token rows, 2 workers)."""
    return ["model=tiny-2l", "data.seq_len=64", "train.num_workers=2", "train.micro_batch_size=2",
            "train.warmup_steps=0", "train.lr=3e-3", f"storage.root={root}", "tracking.progress_bar=false",
            "train.eval_batches=0", *extra]


def find_train_workers() -> list:
    """Ray Train worker processes started under this test process (its embedded Ray's raylet)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
