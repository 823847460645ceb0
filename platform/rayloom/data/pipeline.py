"""`rayloom data`: read -> validate/clean -> dedup -> tokenize -> pack -> Parquet shards + manifest.

Stages, in order (Ray Data does the per-record work; the driver only sees per-block counts):

1. read + parse (scan.read_records, readers + parsing.ParseUnits): streaming, bounded reads;
   every record becomes ok / bad (quarantined) / filtered; exact keys and MinHash signatures are
   computed here, in parallel.  -> materialised
2. counts per block, distributed dedup (dedup_ray.find_duplicates: band keys grouped across the
   cluster, the first occurrence kept), the quarantine file (one Ray task), max_bad_fraction.
3. select -> tokenize -> pack -> write, one actor-pool stage over the read blocks
   (shard_writer.write_shards, shards.TokenizePackShards): source weights, split, shuffle, token
   ids + loss masks, packed rows, Parquet shards of data.rows_per_shard rows, written straight
   into a new immutable version of the output (publish.shard_destination, storage.new_version).
4. manifest (schema.Manifest), then the version is published: the pointer switches last.

With data.materialize=false the job stops after step 2 and records what the streaming reader
(rayloom.data.from_sources) needs to run step 3 while training reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rayloom import storage
from rayloom.data.schema import MANIFEST, Manifest, StageCounts
from rayloom.data.summary import JobSummary, StageRow, manifest_lines

if TYPE_CHECKING:
    from rayloom.config import DataConfig, ModelConfig, RayloomConfig

log = logging.getLogger(__name__)

# DataConfig fields that do not change what is written (where, how fast, how it looks).
_NON_CONTENT_FIELDS = ("name", "output", "quarantine", "overwrite", "tokenize_batch_size", "num_tokenize_actors",
                       "progress_bars", "materialize")


@dataclass
class DataResult:
    """What the job produced: `output` holds the committed shards (or stream spec) + manifest."""

    output: str
    manifest: Manifest
    quarantine: str | None
    summary: JobSummary = field(repr=False, default_factory=JobSummary)
    # The one-task step of dedup (dedup_ray): its seconds, candidate groups and records.
    dedup: dict = field(repr=False, default_factory=dict)


def default_output(cfg: RayloomConfig) -> str:
    """Where the data job writes, and training, tuning and evaluation read: data.output, else
    <storage.root>/data/<data.name>."""
    return cfg.data.output or storage.join(cfg.storage.root, "data", cfg.data.name)


def quarantine_uri(data: DataConfig, output: str) -> str:
    from rayloom.data.publish import QUARANTINE_SUFFIX

    return data.quarantine or output.rstrip("/") + QUARANTINE_SUFFIX


def config_hash(data: DataConfig) -> str:
    content = {k: v for k, v in dataclasses.asdict(data).items() if k not in _NON_CONTENT_FIELDS}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def dataset_kind(data: DataConfig) -> str:
    return "preference" if data.sources and all(s.schema == "preference" for s in data.sources) else "lm"


def run_data_job(cfg: RayloomConfig) -> DataResult:
    """The `rayloom data` command: run the pipeline on the configured (or embedded) Ray."""
    from rayloom.runtime import apply_storage_env, ray_session

    apply_storage_env(cfg.storage)
    if cfg.data.demo and cfg.data.sources:
        log.warning("data.sources is set, so data.demo=%s is ignored (the demo corpus is generated only "
                    "when there are no sources)", cfg.data.demo)
    elif cfg.data.demo:
        from rayloom.data.demo_corpus import demo_data_config

        cfg = dataclasses.replace(cfg, data=demo_data_config(cfg))
    output = default_output(cfg)
    with ray_session(cfg.cluster, cfg.storage), data_context(cfg.data):
        result = build_dataset(cfg.data, cfg.model, output, root=cfg.storage.root)
    print(f"\nrayloom data: {cfg.data.name} -> {result.output}")
    print(result.summary.table(), flush=True)
    return result


@contextmanager
def data_context(data: DataConfig) -> Iterator[None]:
    """Ray Data settings for the job: ordered execution (determinism) and progress bars."""
    import ray.data  # Ray stays out of `import rayloom.data`

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.op_resource_reservation_enabled)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = data.progress_bars
    # Ray Data's per-operator reservation runs an operator's first task alone until it has seen
    # one output (measured on Ray 2.5x: 6 one-second tasks on 4 CPUs started at 0, 0.9, 1.1 x3,
    # 1.8 s with it; 0 x4, 0.9 x2 without), which left a core idle for one read unit per stage.
    # The job's stages materialise their outputs (the object store spills) and the tokenize
    # stage's outputs are small summaries, so the reservation bounds nothing the job needs.
    ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = saved


def build_dataset(data: DataConfig, model: ModelConfig, output: str, *, root: str | None = None) -> DataResult:
    """The pipeline itself; needs Ray initialised (run_data_job does that). `root` is storage.root:
    an output that is the root or a folder above it is refused."""
    # The stages bring numpy, pyarrow, Ray Data and transformers: imported here, so that
    # `import rayloom.data` stays cheap.
    from rayloom.data.publish import check_outputs, shard_destination
    from rayloom.data.scan import (
        check_bad_fraction,
        read_records,
        scan_records,
        source_entries,
        write_quarantine,
    )
    from rayloom.data.shard_writer import PackJob, sorted_counts, stream_manifest, write_shards
    from rayloom.data.sources import resolve_sources
    from rayloom.data.tokenization import (
        TextBackend,
        check_tokenizer,
        load_fast_tokenizer,
        pad_id_of,
        tokenizer_hash,
    )
    from rayloom.models import resolve_model_dir

    summary = JobSummary()
    quarantine = quarantine_uri(data, output)
    check_outputs(output, quarantine, [s.path for s in data.sources], root=root, overwrite=data.overwrite)
    sources = resolve_sources(data.sources)
    model_dir = resolve_model_dir(model)
    # Not AutoTokenizer: its import (the auto classes) costs about 4.7 s of one CPU before the job
    # starts; the same fast tokenizer through PreTrainedTokenizerFast about 1 s.
    tokenizer = load_fast_tokenizer(model_dir)
    check_tokenizer(tokenizer, model_dir, needs_chat=any(s.config.schema != "text" for s in sources))

    num_files = sum(len(s.files) for s in sources)
    log.info("data %s: reading %d file(s) from %d source(s); validating, filtering, signing", data.name,
             num_files, len(sources))
    # Every second of the job lands in a row: the read's row also holds counting the records and
    # writing the quarantine; dedup's holds the key shuffle, the resolve and counting what is kept.
    start = time.perf_counter()
    records = read_records(sources, data, signatures=True).materialize()
    scan = scan_records(records, sources, data)
    write_quarantine(scan, sources, quarantine)
    read_seconds = time.perf_counter() - start - scan.dedup_seconds
    summary.stages.append(StageRow("read + validate", scan.read, scan.valid, dict(scan.bad_reasons), read_seconds))
    # The quality filters run fused with the read (same tasks); their time is in the row above.
    summary.stages.append(StageRow("quality filters", scan.valid, scan.valid - sum(scan.filtered.values()),
                                   dict(scan.filtered)))
    summary.stages.append(StageRow("dedup", scan.valid - sum(scan.filtered.values()), scan.kept,
                                   dict(scan.duplicates), scan.dedup_seconds))
    check_bad_fraction(scan, data, quarantine)

    weights = [s.config.weight for s in sources]
    job = PackJob(data=data, model=model, kind=dataset_kind(data), weights=weights,
                  duplicates=scan.duplicate_refs, forced=scan.forced, pad_id=pad_id_of(tokenizer),
                  text_backend=TextBackend.of(tokenizer))
    manifest = Manifest(
        kind=job.kind, name=data.name, seq_len=data.seq_len, packing=data.packing,
        sources=source_entries(sources, scan), tokenizer_hash=tokenizer_hash(model_dir),
        pad_id=job.pad_id, config_hash=config_hash(data), quarantine=quarantine if scan.bad else None,
        counts=StageCounts(read=scan.read, bad=scan.bad, filtered=sum(scan.filtered.values()),
                           deduped=sum(scan.duplicates.values()), kept=scan.kept, sampled=scan.sampled),
        drops=sorted_counts({**scan.bad_reasons, **scan.filtered, **scan.duplicates,
                             "weight_subsampled": scan.weight_subsampled}),
    )

    with shard_destination(output, overwrite=data.overwrite) as destination:
        if data.materialize:
            manifest = write_shards(records, job, manifest, destination, summary)
        else:
            manifest = stream_manifest(job, manifest, destination)
        destination.write_json(MANIFEST, manifest.to_dict())
        publish_start = time.perf_counter()
    # The version is published (manifest of files, then the pointer) when the block ends.
    summary.stages.append(StageRow("publish", seconds=time.perf_counter() - publish_start))
    summary.lines += manifest_lines(manifest)
    return DataResult(output=destination.output, manifest=manifest, quarantine=manifest.quarantine,
                      summary=summary, dedup=scan.dedup_info)
