"""Stages 1-2 of `rayloom data`: read and parse every record (Ray Data), then count, quarantine and
deduplicate without per-record work on the driver.

- read_records: a read plan of units (readers.plan_file) -> ParseUnits tasks, streaming and bounded.
- scan_records: per-block counters (one small row per block, summed on the driver), distributed
  dedup (dedup_ray.find_duplicates), then per-block selection counters (kept, sampled, the
  validation candidates). The bad rows go to the quarantine file from one Ray task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rayloom import storage
from rayloom.config import DataConfig
from rayloom.data.parsing import ParseUnits
from rayloom.data.readers import plan_file
from rayloom.data.record_ids import is_validation, locate, num_copies, source_of, split_hash
from rayloom.data.schema import FileEntry, SourceEntry
from rayloom.data.sources import SourceFiles, fs_path
from rayloom.errors import UserError

log = logging.getLogger(__name__)


# -- stage 1: read, parse, validate, filter, sign --------------------------------------------------------
def read_plan(sources: list[SourceFiles], data: DataConfig) -> list[dict]:
    plan = []
    for s in sources:
        fs, _ = storage.filesystem(s.files[0])
        for i, (uri, fmt, size) in enumerate(zip(s.files, s.formats, s.sizes, strict=True)):
            plan += [dataclasses.asdict(u) for u in plan_file(s.index, i, fs_path(uri), fmt, s.config.text_unit,
                                                                size, fs, data.read_block_bytes,
                                                                data.max_file_bytes)]
    return plan


def _parse(batch: pa.Table, parser: ParseUnits):
    yield from parser(batch)


def read_records(sources: list[SourceFiles], data: DataConfig, *, signatures: bool):
    """One Dataset of RECORD_SCHEMA rows over every source, in source/file/position order."""
    import ray.data  # Ray stays out of `import rayloom.data`

    plan = read_plan(sources, data)
    parser = ParseUnits([s.config for s in sources], [storage.filesystem(s.files[0])[0] for s in sources], data,
                        signatures)
    return ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
        _parse, fn_kwargs={"parser": parser}, batch_size=1, batch_format="pyarrow")


# -- stage 2: counts, quarantine, duplicates --------------------------------------------------------------
@dataclass
class Scan:
    read: int = 0
    bad: int = 0
    valid: int = 0
    bad_reasons: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    per_source: dict[int, Counter] = field(default_factory=dict)
    kept: int = 0
    sampled: int = 0
    weight_subsampled: int = 0
    forced: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dedup_seconds: float = 0.0
    dedup_info: dict = field(default_factory=dict)        # the one-task resolve step: seconds, candidates
    duplicate_refs: list = field(default_factory=list)   # Arrow refs of (doc_id, reason): never on the driver
    bad_refs: list = field(default_factory=list)
    keep_alive: list = field(default_factory=list)        # the materialised datasets behind the refs


def _block_counts(batch: pa.Table) -> pa.Table:
    ids = batch.column("doc_id").to_numpy()
    t = pa.table({"src": source_of(ids), "status": batch.column("status"), "reason": batch.column("reason")})
    grouped = t.group_by(["src", "status", "reason"], use_threads=False).aggregate([("src", "count")])
    return pa.table({"counts": [json.dumps(grouped.to_pylist())]})


def _selection_counts(batch: pa.Table, weights: list[float], seed: int, val_fraction: float,
                      duplicate_refs: list) -> pa.Table:
    import pyarrow.compute as pc

    from rayloom.data.dedup_ray import contains, load_ids

    ids = batch.filter(pc.equal(batch.column("status"), "ok")).column("doc_id").to_numpy()
    ids = ids[~contains(load_ids(duplicate_refs), ids)]
    copies = num_copies(ids, np.asarray(weights)[source_of(ids)], seed)
    sampled_ids = ids[copies > 0]
    src = source_of(ids)
    out = {"kept": np.bincount(src, minlength=len(weights)).tolist(),
           "sampled": np.bincount(src, weights=copies, minlength=len(weights)).astype(int).tolist(),
           "weight_subsampled": int(np.sum(copies == 0)), "sampled_records": len(sampled_ids),
           "any_validation": bool(is_validation(sampled_ids, val_fraction, seed).any()) if len(sampled_ids) else False,
           "min_split": None}
    if len(sampled_ids):
        i = int(np.argmin(split_hash(sampled_ids, seed)))
        out["min_split"] = [float(split_hash(sampled_ids[i:i + 1], seed)[0]), int(sampled_ids[i])]
    return pa.table({"counts": [json.dumps(out)]})


def scan_records(records, sources: list[SourceFiles], data: DataConfig) -> Scan:
    """Counts per stage, reason and source; the duplicates (as object refs); the validation fallback."""
    from rayloom.data.dedup_ray import find_duplicates

    scan = Scan(per_source={s.index: Counter() for s in sources})
    for row in records.map_batches(_block_counts, batch_format="pyarrow", batch_size=None).take_all():
        for entry in json.loads(row["counts"]):
            n, reason = entry["src_count"], entry["reason"]
            scan.read += n
            scan.per_source[entry["src"]]["read"] += n
            if entry["status"] == "bad":
                scan.bad_reasons[reason] += n
                scan.per_source[entry["src"]]["bad"] += n
            elif entry["status"] == "filtered":
                scan.filtered[reason] += n
    scan.bad = sum(scan.bad_reasons.values())
    scan.valid = scan.read - scan.bad
    if scan.bad:
        bad = records.map_batches(_bad_rows, batch_format="pyarrow", batch_size=None)
        bad = bad.materialize()
        scan.keep_alive.append(bad)
        scan.bad_refs = bad.to_arrow_refs()
    start = time.perf_counter()
    dedup = data.dedup if scan.valid - sum(scan.filtered.values()) > 1 else dataclasses.replace(
        data.dedup, exact=False, near=False)  # nothing to compare
    duplicates, counts, scan.dedup_info = find_duplicates(records, dedup)
    scan.duplicates.update(counts)
    scan.duplicate_refs = duplicates.to_arrow_refs()
    scan.keep_alive.append(duplicates)
    weights = [s.config.weight for s in sources]
    best = None
    any_validation, sampled_records = False, 0
    for row in records.map_batches(_selection_counts, fn_kwargs={
            "weights": weights, "seed": data.seed, "val_fraction": data.val_fraction,
            "duplicate_refs": scan.duplicate_refs}, batch_format="pyarrow", batch_size=None).take_all():
        c = json.loads(row["counts"])
        for i in range(len(weights)):
            scan.per_source[i]["kept"] += c["kept"][i]
            scan.per_source[i]["sampled"] += c["sampled"][i]
        scan.weight_subsampled += c["weight_subsampled"]
        sampled_records += c["sampled_records"]
        any_validation |= c["any_validation"]
        if c["min_split"] is not None and (best is None or tuple(c["min_split"]) < best):
            best = tuple(c["min_split"])
    scan.dedup_seconds = time.perf_counter() - start  # the key shuffle, the resolve and the kept counts
    scan.kept = sum(c["kept"] for c in scan.per_source.values())
    scan.sampled = sum(c["sampled"] for c in scan.per_source.values())
    # A validation split must not come out empty just because the hash missed every record.
    if data.val_fraction > 0 and sampled_records >= 2 and not any_validation and best is not None:
        scan.forced = np.asarray([best[1]], dtype=np.int64)
    return scan


def _bad_rows(batch: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.equal(batch.column("status"), "bad")).select(["doc_id", "reason", "detail", "raw"])


def _write_quarantine(uri: str, refs: list, locations: list[tuple[str, tuple[str, ...]]]) -> int:
    """In a Ray task: the bad rows, in record order, as JSON lines; written whole, then renamed
    into place locally (an S3 object appears whole anyway)."""
    import ray

    fs, path = storage.filesystem(uri)
    target = path
    if not storage.is_s3(uri):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        target = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.writing-{os.getpid()}")
    n = 0
    with fs.open_output_stream(target) as out:
        for ref in refs:
            table = ray.get(ref)
            for row in table.to_pylist():
                source_idx, file_idx, row_idx = locate(row["doc_id"])
                source_path, files = locations[source_idx]
                out.write((json.dumps({"source": source_path, "file": files[file_idx], "row": row_idx,
                                       "reason": row["reason"], "detail": row["detail"], "raw": row["raw"]},
                                      ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
                n += 1
    if target != path:
        os.replace(target, path)
    return n


def write_quarantine(scan: Scan, sources: list[SourceFiles], uri: str) -> None:
    """Every bad row with where it came from and why, or no file when there are none (then only a
    previous quarantine *file* of ours is deleted, never a directory or prefix)."""
    import ray

    from rayloom.data.publish import clear_quarantine

    if not scan.bad_refs:
        clear_quarantine(uri)
        return
    locations = [(s.config.path, s.files) for s in sources]
    n = ray.get(ray.remote(_write_quarantine).remote(uri, scan.bad_refs, locations))
    log.warning("%d bad record(s) quarantined in %s", n, uri)


def check_bad_fraction(scan: Scan, data: DataConfig, quarantine: str) -> None:
    if scan.read == 0:
        raise UserError("the sources hold no records (every file is empty); check data.sources")
    fraction = scan.bad / scan.read
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(scan.bad_reasons.items()))
    if fraction > data.max_bad_fraction:
        raise UserError(f"{scan.bad} of {scan.read} records ({fraction:.1%}) are bad ({reasons}), more than "
                        f"data.max_bad_fraction={data.max_bad_fraction}; each is listed with its reason in "
                        f"{quarantine}. Fix the sources or raise data.max_bad_fraction.")
    if not scan.kept:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted({**scan.bad_reasons, **scan.filtered,
                                                           **scan.duplicates}.items()))
        raise UserError(f"no record survived cleaning and deduplication ({drops}); check data.sources and "
                        "data.filters")


def source_entries(sources: list[SourceFiles], scan: Scan) -> list[SourceEntry]:
    return [SourceEntry(
        uri=s.config.path, schema=s.config.schema, format=s.config.format, weight=s.config.weight,
        files=[FileEntry(path=rel, size=size) for rel, size in zip(s.relatives, s.sizes, strict=True)],
        read=scan.per_source[s.index]["read"], bad=scan.per_source[s.index]["bad"],
        kept=scan.per_source[s.index]["kept"], sampled=scan.per_source[s.index]["sampled"],
    ) for s in sources]
