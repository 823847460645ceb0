"""Stages 1-2 of `rayloom data`: read and parse every record (Ray Data), then one ordered driver
pass that counts, quarantines bad rows and finds duplicates across the whole dataset.

The driver only sees small key columns here; the per-record work (parsing, validation, quality
filters, MinHash signatures) runs in Ray Data tasks (parsing.ParseRecords).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from rayloom import storage
from rayloom.config import DataConfig
from rayloom.data.dedup import DuplicateFinder
from rayloom.data.parsing import ParseRecords
from rayloom.data.record_ids import is_validation, locate, source_of, split_hash
from rayloom.data.schema import FileEntry, SourceEntry
from rayloom.data.sources import SourceFiles, read_source_files
from rayloom.errors import UserError

log = logging.getLogger(__name__)


# -- stage 1: read, parse, validate, filter, sign --------------------------------------------------------
def read_records(sources: list[SourceFiles], data: DataConfig, *, signatures: bool):
    """One Dataset of RECORD_SCHEMA rows over every source, in source/file/row order."""
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
    if data.val_fraction <= 0 or len(ids) < 2 or is_validation(ids, data.val_fraction, data.seed).any():
        return np.zeros(0, dtype=np.int64)
    return np.asarray([ids[int(np.argmin(split_hash(ids, data.seed)))]], dtype=np.int64)


def source_entries(sources: list[SourceFiles], scan: Scan, kept_ids: np.ndarray,
                   copies: np.ndarray) -> list[SourceEntry]:
    sampled = Counter()
    for src, n in zip(source_of(kept_ids).tolist(), copies.tolist(), strict=True):
        sampled[src] += n
    return [SourceEntry(
        uri=s.config.path, schema=s.config.schema, format=s.config.format, weight=s.config.weight,
        files=[FileEntry(path=rel, size=size) for rel, size in zip(s.relatives, s.sizes, strict=True)],
        read=scan.per_source[s.index]["read"], bad=scan.per_source[s.index]["bad"],
        kept=scan.per_source[s.index]["kept"], sampled=sampled[s.index],
    ) for s in sources]
