"""Tokenize + pack throughput: rayloom's Ray Data stages vs HF `datasets.map(num_proc=2)` vs a plain loop.

All three tokenize the same generated corpus with the same tiny-preset fast tokenizer and pack with
the same packer (rayloom.data.packing.pack_lm, seq_len 256), and report packed real tokens per
second of wall time. The Ray Data run is the pipeline's own code path - SelectRecords ->
TokenizeRecords actor pool -> AssignGroups -> groupby -> PackGroup - on an already started local
Ray, with the input already in the object store (as after the pipeline's read stage). The HF and
loop baselines pack per tokenization batch (no global shuffle), which only helps them.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time

import numpy as np
from harness import Result

DESCRIPTION = "data pipeline: tokenize + pack tokens/s, Ray Data vs datasets.map(num_proc=2) vs a plain loop"
SEQ_LEN = 256
BATCH = 256  # the pipeline's default data.tokenize_batch_size, for every system


def _corpus(num_docs: int) -> list[str]:
    from pydoc_data.topics import topics

    words = sorted({w for text in topics.values() for w in text.split() if w.isalpha()})
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(40, 400))) for _ in range(num_docs)]


def _tokenize_and_pack(tokenizer, texts: list[str]) -> tuple[int, int]:
    """(rows, real tokens) for one batch, exactly as the pipeline cuts and packs text documents."""
    from rayloom.data.packing import pack_lm

    eos = tokenizer.eos_token_id
    pieces = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids = np.asarray([*ids, eos], dtype=np.int32)
        pieces += [ids[i:i + SEQ_LEN] for i in range(0, len(ids), SEQ_LEN)]
    table, stats = pack_lm(pieces, pieces, SEQ_LEN, tokenizer.pad_token_id, True, 0)
    return table.num_rows, stats.real_tokens


def _plain_loop(model_dir, texts: list[str]) -> int:
    from rayloom.data.tokenization import load_fast_tokenizer

    tokenizer = load_fast_tokenizer(model_dir)
    return sum(_tokenize_and_pack(tokenizer, texts[i:i + BATCH])[1] for i in range(0, len(texts), BATCH))


def _hf_datasets(model_dir, texts: list[str], cache: str) -> tuple[int, float]:
    import datasets

    from rayloom.data.tokenization import load_fast_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_fast_tokenizer(model_dir)

    def fn(batch):
        rows, real = _tokenize_and_pack(tokenizer, batch["text"])
        return {"real": [real], "rows": [rows]}

    ds = datasets.Dataset.from_dict({"text": texts})
    start = time.perf_counter()
    out = ds.map(fn, batched=True, batch_size=BATCH, num_proc=2, remove_columns=["text"],
                 load_from_cache_file=False, cache_file_name=os.path.join(cache, "map.arrow"))
    real = int(sum(out["real"]))
    return real, time.perf_counter() - start


def _ray_pipeline(model_dir_cfg, texts: list[str], num_actors: int) -> tuple[int, float]:
    import pyarrow as pa
    import ray
    import ray.data

    from rayloom.config import DataConfig
    from rayloom.data.pipeline import select_and_tokenize
    from rayloom.data.plan import record_id
    from rayloom.data.shards import AssignGroups, PackGroup, pack_group
    from rayloom.data.tokenization import load_fast_tokenizer, pad_id_of

    data = DataConfig(seq_len=SEQ_LEN, val_fraction=0.0, tokenize_batch_size=BATCH, num_tokenize_actors=num_actors)
    # As the read stage leaves it: canonical records, materialised in the object store.
    ids = [record_id(0, i // 1000, i % 1000) for i in range(len(texts))]
    table = pa.table({"doc_id": pa.array(ids, pa.int64()), "status": ["ok"] * len(texts),
                      "schema": ["text"] * len(texts), "payload": [json.dumps({"text": t}) for t in texts]})
    num_blocks = 4 * num_actors
    step = -(-len(texts) // num_blocks)
    records = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(texts), step)]).materialize()
    tokenizer = load_fast_tokenizer(_model_dir(model_dir_cfg))
    pad_id = pad_id_of(tokenizer)
    start = time.perf_counter()
    # The job's stage: select -> tokenize (actor pool) -> assign groups -> groupby -> pack, one streaming pass.
    tokenized = select_and_tokenize(records, data, model_dir_cfg, "lm", [1.0], np.zeros(0, np.int64),
                                    np.zeros(0, np.int64))
    # As many shard groups as the job would make (data.rows_per_shard rows of seq_len tokens each).
    sample = texts[:200]
    tokens_estimate = sum(map(len, texts)) * sum(len(i) for i in tokenizer(sample)["input_ids"]) / sum(map(len, sample))
    groups = {"train": max(1, math.ceil(tokens_estimate / (SEQ_LEN * data.rows_per_shard))), "validation": 1}
    pack = PackGroup("lm", SEQ_LEN, True, pad_id, 0, stage=None)
    packed = (tokenized.map_batches(AssignGroups(groups, 0), batch_format="pyarrow", batch_size=None)
              .groupby(["split", "group"], num_partitions=sum(groups.values()))
              .map_groups(pack_group, fn_kwargs={"pack": pack}, batch_format="pyarrow")
              .map_batches(_real_tokens, batch_format="pyarrow", batch_size=None))
    real = sum(r["real"] for r in packed.take_all())
    return real, time.perf_counter() - start


def _real_tokens(table):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.table({"real": [int(pc.sum(pc.list_flatten(table.column("attention_mask"))).as_py() or 0)]})


def _model_dir(model):
    from rayloom.models import resolve_model_dir

    return resolve_model_dir(model)


def run(quick: bool = False) -> Result:
    import ray

    from rayloom.config import ClusterConfig, compose
    from rayloom.runtime import init_ray

    cfg = compose("data", ["model=tiny"])
    model_dir = _model_dir(cfg.model)
    texts = _corpus(3000 if quick else 24000)
    rows = []

    start = time.perf_counter()
    loop_tokens = _plain_loop(model_dir, texts)
    loop_s = time.perf_counter() - start
    rows.append({"system": "plain loop (1 process)", "tokens": loop_tokens, "seconds": loop_s,
                 "tokens_per_s": loop_tokens / loop_s})

    cache = tempfile.mkdtemp(prefix="rayloom-bench-data-")
    try:
        hf_tokens, hf_s = _hf_datasets(model_dir, texts, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows.append({"system": "datasets.map(num_proc=2)", "tokens": hf_tokens, "seconds": hf_s,
                 "tokens_per_s": hf_tokens / hf_s})

    started = init_ray(ClusterConfig())
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        # Warm the worker pool once so process start-up is not charged to the first system measured.
        _ray_pipeline(cfg.model, texts[:200], 2)
        ray_rows = {}
        for actors in (1, 2):
            tokens, seconds = _ray_pipeline(cfg.model, texts, actors)
            ray_rows[actors] = tokens / seconds
            rows.append({"system": f"rayloom Ray Data ({actors} tokenize actor{'s' if actors > 1 else ''})",
                         "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
    finally:
        if started:
            ray.shutdown()

    assert len({r["tokens"] for r in rows}) == 1, f"systems packed different token counts: {rows}"
    ratios = {
        "rayloom (2 actors) / datasets.map (tokens/s)": ray_rows[2] / rows[1]["tokens_per_s"],
        "rayloom (2 actors) / plain loop (tokens/s)": ray_rows[2] / rows[0]["tokens_per_s"],
        "rayloom 2 actors / 1 actor (tokens/s)": ray_rows[2] / ray_rows[1],
    }
    notes = [
        f"{len(texts):,} generated documents (40-400 words from the pydoc vocabulary), tiny preset tokenizer, "
        f"seq_len {SEQ_LEN}, batch {BATCH}; every system packs the same number of real tokens.",
        "Ray Data runs on an already started local Ray; actor start-up is included in its time. The plain loop's "
        "fast tokenizer already uses both cores (Rust threads) inside one process.",
        "Scaling: tokenization is an actor pool (data.num_tokenize_actors) and packing/writing is one task per "
        "shard group, so both spread over every CPU of a multi-node cluster; reading and parsing is one task per "
        "file. The serial part is the driver's dedup pass over small key columns (exact hashes + an LSH index); "
        "on this 2-core machine the 1 -> 2 actor ratio above is the measured scaling of the parallel part.",
    ]
    return Result(name="data", description=DESCRIPTION, rows=rows, ratios=ratios,
                  goals={"rayloom (2 actors) / datasets.map (tokens/s)": ">= 1.0"}, notes=notes)
