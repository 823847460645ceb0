"""Stages 3-4 of `rayloom data`: select -> tokenize -> pack -> write, one task stage over the read
blocks (shards.TokenizePackShards), and the manifest that describes what it wrote.

With data.materialize=false nothing is tokenized here: `stream_manifest` records what the
streaming reader (rayloom.data.from_sources) needs to run the same stage while training reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig
from rayloom.data.record_ids import mix
from rayloom.data.schema import SPLITS, Manifest, SplitStats, StreamSpec, TokenStats
from rayloom.data.summary import JobSummary
from rayloom.data.tokenization import TextBackend

log = logging.getLogger(__name__)

DROPPED_FILE = "dropped.parquet"


@dataclass(frozen=True)
class PackJob:
    """What the tokenize/pack stage needs: the configs and the record decisions of stage 2."""

    data: DataConfig
    model: ModelConfig
    kind: str                   # "lm" or "preference"
    weights: list[float]        # per source
    duplicates: list            # object refs of Arrow tables of duplicate doc_ids: never selected
    forced: np.ndarray          # ids sent to the validation split whatever their hash
    pad_id: int
    # The driver's tokenizer backend for text records (workers then skip importing transformers).
    text_backend: TextBackend | None = None


def tokenize_and_pack(records, job: PackJob, *, num_blocks: int, stage: str | None = None,
                      only_split: str | None = None):
    """Lazy Dataset: shard summaries (`stage` set) or packed rows of `only_split` (streaming).

    One map_batches stage over whole blocks (shards.TokenizePackShards), at most
    data.num_tokenize_actors blocks at once. Tasks, not an actor pool: an actor is a new process per
    job (about 1 s to start, then its imports), while tasks run in the Ray workers the read stage
    already warmed; each worker builds the stage once per job (shards.tokenize_pack_block). Measured
    on a warm 24k-document job: the stage 4.7 s -> 2.9 s, the job 12.5 s -> 8.5-9.1 s.
    """
    import uuid

    from rayloom.data.selection import SelectRecords
    from rayloom.data.shards import tokenize_pack_block

    data = job.data
    select = SelectRecords(job.weights, data.seed, data.val_fraction, job.duplicates, job.forced.tolist(),
                           only_split)
    kwargs = {"data": data, "model": job.model, "kind": job.kind, "pad_id": job.pad_id, "select": select,
              "stage": stage, "text_backend": job.text_backend}
    import ray.data

    # compute=, not concurrency=: Ray 2.51 deprecates the latter and warns on the console at every job.
    return records.map_batches(
        tokenize_pack_block, fn_kwargs={"job_id": uuid.uuid4().hex, "kwargs": kwargs},
        batch_size=None, batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=max(1, min(data.num_tokenize_actors, num_blocks))),
    )


def write_shards(records, job: PackJob, manifest: Manifest, destination, summary: JobSummary) -> Manifest:
    """Run the stage into `destination`; `manifest` (stages 1-2 filled in) completed with what was written."""
    data = job.data
    num_blocks = records.num_blocks()
    log.info("data %s: tokenizing and packing %d record(s) in %d block(s), at most %d at once", data.name,
             manifest.counts.sampled, num_blocks, min(data.num_tokenize_actors, num_blocks))
    with summary.stage("tokenize + pack + write") as row:
        written = tokenize_and_pack(records, job, num_blocks=num_blocks, stage=destination.stage).take_all()
        tokenize_drops: Counter = Counter()
        for shard in written:
            tokenize_drops.update(json.loads(shard["drops"]))
        row.records_in = manifest.counts.sampled
        row.records_out = sum(shard["documents"] for shard in written)
        row.dropped = dict(tokenize_drops)
    files = sorted((shard for shard in written if shard["file"]), key=lambda shard: shard["file"])
    splits = {}
    for split in SPLITS:
        mine = [shard for shard in written if shard["split"] == split]
        names = [shard["file"] for shard in files if shard["split"] == split]
        # Readers go through the files in this order: a seeded shuffle, so sources interleave.
        order = np.argsort(mix(np.arange(len(names)), data.seed, 0x3F), kind="stable")
        splits[split] = SplitStats(rows=sum(s["rows"] for s in mine), tokens=sum(s["real_tokens"] for s in mine),
                                   slots=sum(s["slots"] for s in mine), documents=sum(s["documents"] for s in mine),
                                   files=[names[i] for i in order])
    real = sum(s.tokens for s in splits.values())
    slots = sum(s.slots for s in splits.values())
    content = hashlib.sha256("".join(f"{s['file']}\0{s['sha256']}\n" for s in files).encode()).hexdigest()
    return dataclasses.replace(
        manifest, materialized=True, splits=splits,
        counts=dataclasses.replace(manifest.counts, tokenized=row.records_out, rows=sum(s["rows"] for s in written)),
        drops=sorted_counts({**manifest.drops, **tokenize_drops}),
        tokens=TokenStats(real=real, slots=slots, packing_efficiency=round(real / slots, 6) if slots else 0.0,
                          truncated_records=sum(s["truncated"] for s in written)),
        content_hash=content)


def stream_manifest(job: PackJob, manifest: Manifest, destination) -> Manifest:
    """data.materialize=false: write the dropped ids, record the stream spec; the content hash
    covers the inputs (sources, dropped ids, config, tokenizer) instead of shard bytes."""
    import ray  # Ray stays out of `import rayloom.data`

    digest = ray.get(ray.remote(_write_dropped).remote(storage.join(destination.stage, DROPPED_FILE), job.duplicates))
    spec = StreamSpec(data=dataclasses.asdict(job.data), model=dataclasses.asdict(job.model), dropped=DROPPED_FILE,
                      forced_validation=job.forced.tolist())
    content = hashlib.sha256(json.dumps({"sources": [dataclasses.asdict(s) for s in manifest.sources],
                                         "dropped": digest, "config": manifest.config_hash,
                                         "tokenizer": manifest.tokenizer_hash}, sort_keys=True).encode()).hexdigest()
    return dataclasses.replace(manifest, materialized=False, splits={split: SplitStats() for split in SPLITS},
                               tokens=None, stream=spec, content_hash=content)


def _write_dropped(uri: str, duplicates: list) -> str:
    """In a Ray task: the duplicate ids as one Parquet file; returns its sha256."""
    import pyarrow as pa

    from rayloom.data.dedup_ray import load_ids
    from rayloom.data.shards import parquet_bytes

    data = parquet_bytes(pa.table({"doc_id": load_ids(duplicates)}))
    storage.write_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()


def sorted_counts(counter: dict) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counter.items())}
