"""Helpers for the alignment tests: preference rows in the shard contract (rayloom.data.schema), built
here with the tiny model's chat template so the trainer is tested without waiting for the data job.

Imported as `from helpers.align_fixtures import ...` (tests/ is on sys.path).
"""

from __future__ import annotations


def encode_pairs(tokenizer_dir, records: list[dict], seq_len: int = 64) -> list[dict]:
    """{prompt, chosen, rejected} records -> preference rows, tokenized the way the data pipeline does."""
    from rayloom.data.packing import preference_rows

    return preference_rows(tokenizer_dir, records, seq_len)


def demo_pairs(tokenizer_dir, num: int, seq_len: int = 64, seed: int = 0) -> list[dict]:
    """Learnable pairs from the demo corpus: the chosen answer is correct, the rejected one wrong."""
    from rayloom.data.demo_corpus import preference_records

    return encode_pairs(tokenizer_dir, preference_records(num, seed=seed), seq_len)


def learnable_pairs(tokenizer_dir, num: int, seq_len: int = 64, offset: int = 0) -> list[dict]:
    """Pairs with one global, quickly learnable preference: the chosen side answers ("a + b" -> the
    sum), the rejected side always says "no". Different `offset`s give disjoint prompts (held out)."""
    records = []
    for i in range(offset, offset + num):
        a, b = i % 23, (7 * i + 3) % 19
        records.append({"prompt": f"What is {a} + {b}?", "chosen": str(a + b), "rejected": "no"})
    return encode_pairs(tokenizer_dir, records, seq_len)


def align_overrides(root, *extra: str) -> list[str]:
    """Small, fast settings shared by the alignment tests (tiny-2l, 64-token sides, 2 workers)."""
    return ["model=tiny-2l", "data.seq_len=64", "train.num_workers=2", "train.micro_batch_size=4",
            "train.warmup_steps=0", f"storage.root={root}", "tracking.progress_bar=false", "tracking.log_every=1",
            "train.export=false", "train.on_existing=overwrite", *extra]


def write_preference_shards(out_uri: str, train_rows: list[dict], val_rows: list[dict], seq_len: int) -> str:
    """Preference shards (Parquet + manifest.json of kind "preference"), published with commit_dir."""
    import json
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayloom import storage
    from rayloom.data.schema import PREFERENCE_COLUMNS

    schema = pa.schema([(c, pa.list_(pa.int8() if c.endswith("mask") else pa.int32())) for c in PREFERENCE_COLUMNS])
    with tempfile.TemporaryDirectory() as tmp:
        splits = {}
        for split, rows in (("train", train_rows), ("validation", val_rows)):
            (Path(tmp) / split).mkdir()
            name = f"{split}/part-00000.parquet"
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), Path(tmp) / name)
            splits[split] = {"rows": len(rows), "files": [name]}
        manifest = {"kind": "preference", "seq_len": seq_len, "splits": splits, "sources": [], "counts": {},
                    "drops": {}, "tokenizer_hash": "", "config_hash": "", "content_hash": ""}
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
        return storage.commit_dir(tmp, out_uri)
