"""`rayloom data`: read -> validate/clean -> dedup -> tokenize -> pack -> Parquet shards + manifest.

Stages, in order (Ray Data does the per-record work; the driver only sees small key columns):

1. read + parse (ParseRecords): every record becomes ok / bad (quarantined) / filtered;
   MinHash signatures are computed here, in parallel.              -> materialised
2. dedup (driver, DuplicateFinder): one ordered pass over the keys finds exact and near
   duplicates across the whole dataset; counts; quarantine file; max_bad_fraction check.
3. select -> tokenize -> pack -> write, one actor-pool stage over the read blocks
   (shards.TokenizePackShards): source weights, split, shuffle, token ids + loss masks, packed
   rows, Parquet shards of data.rows_per_shard rows.
4. manifest + publish with the commit marker last.

With data.materialize=false the job stops after step 2 and records what the streaming reader
(rayloom.data.stream) needs to run step 3 while training reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig, RayloomConfig
from rayloom.data.dedup import DEDUP_REASONS, DuplicateFinder
from rayloom.data.plan import locate, num_copies, source_of, split_hash
from rayloom.data.records import BAD_REASONS
from rayloom.data.schema import SPLITS
from rayloom.data.sources import SourceFiles, resolve_sources
from rayloom.data.summary import JobSummary
from rayloom.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
QUARANTINE_SUFFIX = ".quarantine.jsonl"
DROPPED_FILE = "dropped.parquet"
# DataConfig fields that do not change what is written (where, how fast, how it looks).
_NON_CONTENT_FIELDS = ("name", "output", "quarantine", "tokenize_batch_size", "num_tokenize_actors",
                       "progress_bars", "materialize")


@dataclass
class DataResult:
    """What the job produced: `output` holds the committed shards (or stream spec) + manifest."""

    output: str
    manifest: dict
    quarantine: str | None
    summary: JobSummary = field(repr=False, default_factory=JobSummary)


def default_output(cfg: RayloomConfig) -> str:
    return cfg.data.output or storage.join(cfg.storage.root, "data", cfg.data.name)


def quarantine_uri(data: DataConfig, output: str) -> str:
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
        result = build_dataset(cfg.data, cfg.model, output)
    print(f"\nrayloom data: {cfg.data.name} -> {result.output}")
    print(result.summary.table(), flush=True)
    return result


@contextmanager
def data_context(data: DataConfig) -> Iterator[None]:
    """Ray Data settings for the job: ordered execution (determinism) and progress bars."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = data.progress_bars
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def build_dataset(data: DataConfig, model: ModelConfig, output: str) -> DataResult:
    """The pipeline itself; needs Ray initialised (run_data_job does that)."""
    from rayloom.data.publish import ShardDestination, check_replaceable
    from rayloom.data.tokenization import check_tokenizer, pad_id_of, tokenizer_hash
    from rayloom.models import load_tokenizer, resolve_model_dir

    summary = JobSummary()
    kind = dataset_kind(data)
    sources = resolve_sources(data.sources)
    model_dir = resolve_model_dir(model)
    tokenizer = load_tokenizer(model_dir)
    check_tokenizer(tokenizer, model_dir, needs_chat=any(s.config.schema != "text" for s in sources))
    check_replaceable(output)
    quarantine = quarantine_uri(data, output)

    num_files = sum(len(s.files) for s in sources)
    log.info("data %s: reading %d file(s) from %d source(s); validating, filtering, signing", data.name,
             num_files, len(sources))
    with summary.stage("read + validate") as row:
        records = read_records(sources, data, signatures=True).materialize()
    scan = scan_records(records, sources, data)
    row.records_in, row.records_out, row.dropped = scan.read, scan.valid, dict(scan.bad_reasons)
    with summary.stage("quality filters") as row:
        # Run fused with the read (same tasks); its time is in the row above.
        row.records_in, row.dropped = scan.valid, dict(scan.filtered)
        row.records_out = scan.valid - sum(scan.filtered.values())
    with summary.stage("dedup") as row:
        row.records_in = scan.valid - sum(scan.filtered.values())
        row.dropped = dict(scan.duplicates)
        row.records_out = len(scan.kept_ids)
        row.seconds = scan.dedup_seconds
    write_quarantine(scan.bad_rows, sources, quarantine)
    check_bad_fraction(scan, data, quarantine)
    kept_ids = np.asarray(scan.kept_ids, dtype=np.int64)
    weights = [s.config.weight for s in sources]
    copies = num_copies(kept_ids, np.asarray(weights)[source_of(kept_ids)], data.seed)
    forced = forced_validation(kept_ids[copies > 0], data)
    base_manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": data.name,
        "seq_len": data.seq_len,
        "packing": data.packing,
        "sources": source_entries(sources, scan, kept_ids, copies),
        "tokenizer_hash": tokenizer_hash(model_dir),
        "pad_id": pad_id_of(tokenizer),
        "config_hash": config_hash(data),
        "quarantine": quarantine if scan.bad_rows else None,
    }
    counts = {"read": scan.read, "bad": scan.bad, "filtered": sum(scan.filtered.values()),
              "deduped": sum(scan.duplicates.values()), "kept": len(kept_ids), "sampled": int(copies.sum())}
    drops = {**scan.bad_reasons, **scan.filtered, **scan.duplicates,
             "weight_subsampled": int(np.sum(copies == 0))}

    destination = ShardDestination(output)
    try:
        if not data.materialize:
            manifest = stream_manifest(base_manifest, counts, drops, data, model, scan, forced, destination)
        else:
            manifest = write_shards(records, data, model, kind, base_manifest, counts, drops, scan, forced,
                                    destination, summary, tokenizer)
        destination.write_json("manifest.json", manifest)
        with summary.stage("publish"):
            published = destination.publish()
    except BaseException:
        destination.abort()
        raise
    summary.lines += summary_lines(manifest, quarantine if scan.bad_rows else None)
    return DataResult(output=published if not storage.is_s3(output) else output, manifest=manifest,
                      quarantine=manifest["quarantine"], summary=summary)


# -- stage 1: read, parse, validate, filter, sign --------------------------------------------------------
def read_records(sources: list[SourceFiles], data: DataConfig, *, signatures: bool):
    """One Dataset of RECORD_SCHEMA rows over every source, in source/file/row order."""
    from rayloom.data.parsing import ParseRecords
    from rayloom.data.sources import read_source_files

    datasets = [
        read_source_files(source).map_batches(ParseRecords(source, data.filters, data.dedup, signatures),
                                              batch_format="pyarrow", batch_size=None)
        for source in sources
    ]
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


# -- stage 2: one ordered driver pass: counts, quarantine rows, duplicates ---------------------------------
@dataclass
class Scan:
    read: int = 0
    bad: int = 0
    valid: int = 0
    bad_reasons: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    per_source: dict[int, Counter] = field(default_factory=dict)
    bad_rows: list[dict] = field(default_factory=list)
    kept_ids: list[int] = field(default_factory=list)
    dropped_ids: list[int] = field(default_factory=list)
    dedup_seconds: float = 0.0


def scan_records(records, sources: list[SourceFiles], data: DataConfig) -> Scan:
    import time

    from tqdm.auto import tqdm

    scan = Scan(per_source={s.index: Counter() for s in sources})
    finder = DuplicateFinder(data.dedup)
    total = records.count()
    columns = ["doc_id", "status", "reason", "detail", "raw", "exact", "signature"]
    dedup_time = 0.0
    with tqdm(total=total, desc="dedup", unit="rec", disable=not data.progress_bars, leave=False) as bar:
        for batch in records.select_columns(columns).iter_batches(batch_format="pyarrow", batch_size=4096):
            cols = {name: batch.column(name).to_pylist() for name in columns}
            start = time.perf_counter()
            for i, doc_id in enumerate(cols["doc_id"]):
                source = scan.per_source[locate(doc_id)[0]]
                source["read"] += 1
                status = cols["status"][i]
                if status == "bad":
                    reason = cols["reason"][i]
                    scan.bad_reasons[reason] += 1
                    source["bad"] += 1
                    scan.bad_rows.append({"doc_id": doc_id, "reason": reason, "detail": cols["detail"][i],
                                          "raw": cols["raw"][i]})
                    continue
                if status == "filtered":
                    scan.filtered[cols["reason"][i]] += 1
                    continue
                duplicate = finder.check(doc_id, cols["exact"][i], cols["signature"][i])
                if duplicate:
                    scan.duplicates[duplicate] += 1
                    scan.dropped_ids.append(doc_id)
                else:
                    scan.kept_ids.append(doc_id)
                    source["kept"] += 1
            dedup_time += time.perf_counter() - start
            bar.update(batch.num_rows)
    scan.read = total
    scan.bad = sum(scan.bad_reasons.values())
    scan.valid = scan.read - scan.bad
    scan.dedup_seconds = dedup_time
    return scan


def write_quarantine(bad_rows: list[dict], sources: list[SourceFiles], uri: str) -> None:
    """Every bad row with where it came from and why (JSON lines), or no file when there are none."""
    if not bad_rows:
        if storage.exists(uri):
            storage.remove(uri)
        return
    lines = []
    for row in sorted(bad_rows, key=lambda r: r["doc_id"]):
        source_idx, file_idx, row_idx = locate(row["doc_id"])
        source = sources[source_idx]
        lines.append(json.dumps({
            "source": source.config.path, "file": source.files[file_idx], "row": row_idx,
            "reason": row["reason"], "detail": row["detail"], "raw": row["raw"],
        }, ensure_ascii=False, sort_keys=True))
    storage.write_text(uri, "\n".join(lines) + "\n")
    log.warning("%d bad record(s) quarantined in %s", len(bad_rows), uri)


def check_bad_fraction(scan: Scan, data: DataConfig, quarantine: str) -> None:
    if scan.read == 0:
        raise UserError("the sources hold no records (every file is empty); check data.sources")
    fraction = scan.bad / scan.read
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(scan.bad_reasons.items()))
    if fraction > data.max_bad_fraction:
        raise UserError(f"{scan.bad} of {scan.read} records ({fraction:.1%}) are bad ({reasons}), more than "
                        f"data.max_bad_fraction={data.max_bad_fraction}; each is listed with its reason in "
                        f"{quarantine}. Fix the sources or raise data.max_bad_fraction.")
    if not scan.kept_ids:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted({**scan.bad_reasons, **scan.filtered,
                                                           **scan.duplicates}.items()))
        raise UserError(f"no record survived cleaning and deduplication ({drops}); check data.sources and "
                        "data.filters")


def forced_validation(ids: np.ndarray, data: DataConfig) -> np.ndarray:
    """A validation split must not come out empty just because the hash missed every record."""
    from rayloom.data.plan import is_validation

    if data.val_fraction <= 0 or len(ids) < 2 or is_validation(ids, data.val_fraction, data.seed).any():
        return np.zeros(0, dtype=np.int64)
    return np.asarray([ids[int(np.argmin(split_hash(ids, data.seed)))]], dtype=np.int64)


def source_entries(sources: list[SourceFiles], scan: Scan, kept_ids: np.ndarray, copies: np.ndarray) -> list[dict]:
    sampled = Counter()
    for src, n in zip(source_of(kept_ids).tolist(), copies.tolist(), strict=True):
        sampled[src] += n
    return [{
        "uri": s.config.path, "schema": s.config.schema, "format": s.config.format, "weight": s.config.weight,
        "files": [{"path": rel, "size": size} for rel, size in zip(s.relatives, s.sizes, strict=True)],
        "read": scan.per_source[s.index]["read"], "bad": scan.per_source[s.index]["bad"],
        "kept": scan.per_source[s.index]["kept"], "sampled": sampled[s.index],
    } for s in sources]


# -- stages 3-4: select, tokenize, pack, write (one actor stage) -------------------------------------------
def tokenize_and_pack(records, data: DataConfig, model: ModelConfig, kind: str, weights: list[float],
                      dropped: np.ndarray, forced: np.ndarray, pad_id: int, *, num_blocks: int,
                      stage: str | None = None, only_split: str | None = None):
    """Lazy Dataset: shard summaries (`stage` set) or packed rows of `only_split` (streaming).

    One map_batches stage over whole blocks on an actor pool (shards.TokenizePackShards); no more
    actors than blocks, since each costs a process start and a tokenizer load.
    """
    import ray
    import ray.data

    from rayloom.data.selection import SelectRecords
    from rayloom.data.shards import TokenizePackShards

    select = SelectRecords(weights, data.seed, data.val_fraction, ray.put(dropped), ray.put(forced), only_split)
    return records.map_batches(
        TokenizePackShards,
        fn_constructor_kwargs={"data": data, "model": model, "kind": kind, "pad_id": pad_id, "select": select,
                               "stage": stage},
        batch_size=None, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(data.num_tokenize_actors, num_blocks))),
    )


def write_shards(records, data: DataConfig, model: ModelConfig, kind: str, base: dict, counts: dict, drops: dict,
                 scan: Scan, forced: np.ndarray, destination, summary: JobSummary, tokenizer) -> dict:
    from rayloom.data.plan import mix
    from rayloom.data.tokenization import pad_id_of

    weights = [s["weight"] for s in base["sources"]]
    num_blocks = records.num_blocks()
    log.info("data %s: tokenizing and packing %d record(s) in %d block(s) with %d actor(s)", data.name,
             counts["sampled"], num_blocks, min(data.num_tokenize_actors, num_blocks))
    with summary.stage("tokenize + pack + write") as row:
        written = tokenize_and_pack(records, data, model, kind, weights, np.asarray(scan.dropped_ids, dtype=np.int64),
                                    forced, pad_id_of(tokenizer), num_blocks=num_blocks,
                                    stage=destination.stage).take_all()
        tokenize_drops: Counter = Counter()
        for w in written:
            tokenize_drops.update(json.loads(w["drops"]))
        row.records_in = counts["sampled"]
        row.records_out = sum(w["documents"] for w in written)
        row.dropped = dict(tokenize_drops)
    drops.update(tokenize_drops)
    counts["tokenized"] = row.records_out
    counts["rows"] = sum(w["rows"] for w in written)
    files = sorted((w for w in written if w["file"]), key=lambda w: w["file"])
    splits = {}
    for split in SPLITS:
        mine = [w for w in written if w["split"] == split]
        names = [w["file"] for w in files if w["split"] == split]
        # Readers go through the files in this order: a seeded shuffle, so sources interleave.
        order = np.argsort(mix(np.arange(len(names)), data.seed, 0x3F), kind="stable")
        splits[split] = {"rows": sum(w["rows"] for w in mine), "tokens": sum(w["real_tokens"] for w in mine),
                         "slots": sum(w["slots"] for w in mine), "documents": sum(w["documents"] for w in mine),
                         "files": [names[i] for i in order]}
    real = sum(s["tokens"] for s in splits.values())
    slots = sum(s["slots"] for s in splits.values())
    content = hashlib.sha256("".join(f"{w['file']}\0{w['sha256']}\n" for w in files).encode()).hexdigest()
    return {**base, "materialized": True, "splits": splits, "counts": counts, "drops": _sorted(drops),
            "tokens": {"real": real, "slots": slots, "packing_efficiency": round(real / slots, 6) if slots else 0.0,
                       "truncated_records": sum(w["truncated"] for w in written)},
            "content_hash": content}


# -- materialize=false: what the streaming reader needs -----------------------------------------------------
def stream_manifest(base: dict, counts: dict, drops: dict, data: DataConfig, model: ModelConfig, scan: Scan,
                    forced: np.ndarray, destination) -> dict:
    import pyarrow as pa

    from rayloom.data.shards import parquet_bytes

    dropped = np.asarray(sorted(scan.dropped_ids), dtype=np.int64)
    destination.write_bytes(DROPPED_FILE, parquet_bytes(pa.table({"doc_id": dropped})))
    spec = {"data": dataclasses.asdict(data), "model": dataclasses.asdict(model),
            "dropped": DROPPED_FILE, "forced_validation": forced.tolist()}
    content = hashlib.sha256(json.dumps({"sources": base["sources"], "dropped": dropped.tolist(),
                                         "config": base["config_hash"], "tokenizer": base["tokenizer_hash"]},
                                        sort_keys=True).encode()).hexdigest()
    splits = {split: {"rows": None, "tokens": None, "documents": None, "files": []} for split in SPLITS}
    return {**base, "materialized": False, "splits": splits, "counts": counts, "drops": _sorted(drops),
            "tokens": None, "stream": spec, "content_hash": content}


def _sorted(counter: dict) -> dict:
    return {k: int(v) for k, v in sorted(counter.items())}


def summary_lines(manifest: dict, quarantine: str | None) -> list[str]:
    lines = []
    counts = manifest["counts"]
    if manifest["materialized"]:
        tokens = manifest["tokens"]
        train, val = manifest["splits"]["train"], manifest["splits"]["validation"]
        how = "packing efficiency" if manifest["kind"] == "lm" and manifest["packing"] else \
            "of the padded slots are real tokens"
        lines.append(f"tokens: {tokens['real']:,} real in {tokens['slots']:,} slots "
                     f"({tokens['packing_efficiency']:.1%} {how}); "
                     f"train {train['rows']:,} rows in {len(train['files'])} shard(s), "
                     f"validation {val['rows']:,} rows in {len(val['files'])} shard(s)")
    else:
        lines.append("materialize=false: records validated and deduplicated; tokenization and packing stream "
                     "from the sources while training reads (rayloom.data.open_shards)")
    if counts["bad"]:
        lines.append(f"bad rows: {counts['bad']:,} of {counts['read']:,} quarantined in {quarantine}")
    lines.append(f"content hash {manifest['content_hash'][:16]}  config hash {manifest['config_hash'][:16]}  "
                 f"tokenizer {manifest['tokenizer_hash'][:16]}")
    return lines


__all__ = ["BAD_REASONS", "DEDUP_REASONS", "DataResult", "build_dataset", "default_output", "run_data_job"]
