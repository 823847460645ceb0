"""Distributed exact + near-duplicate removal over Ray Data: no per-record work on the driver.

1. keys (per block, in parallel): every ok record's LSH band keys (dedup.band_keys, from the
   MinHash signature computed at read time) or, with near-dedup off, its exact key, as 64-bit
   values, each tagged with a hash partition.
2. candidates (one Ray Data groupby on the partition, so a key's records meet in one call): the
   groups of 2+ records that share a key. Most records share no key and leave nothing behind.
3. signatures of the records in some group only (a parallel filter over the read records).
4. resolve (one Ray task, its work grows with the candidates, not the records):
   dedup.resolve_groups applies the first-occurrence rule; the result is a small table of
   (doc_id, reason) that stays in the object store. The driver gets the counts per reason.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayloom.config.data import DedupConfig
from rayloom.data.dedup import band_keys, candidate_groups, exact_key64, resolve_groups

DUPLICATES_SCHEMA = pa.schema([("doc_id", pa.int64()), ("reason", pa.string())])
_KEYS_SCHEMA = pa.schema([("part", pa.int64()), ("key", pa.uint64()), ("doc_id", pa.int64())])
_GROUPS_SCHEMA = pa.schema([("members", pa.list_(pa.int64()))])
_SIGNED_SCHEMA = pa.schema([("doc_id", pa.int64()), ("exact", pa.binary()), ("signature", pa.binary())])

# Loaded id sets, per worker process (tasks reuse workers): keyed by the object refs' ids.
_CACHE: dict[tuple, np.ndarray] = {}


def load_ids(refs: list, column: str = "doc_id") -> np.ndarray:
    """Sorted unique ids of a list of Arrow table refs, loaded once per worker process."""
    import ray  # only inside Ray workers

    key = (column, *(r.hex() for r in refs))
    if key not in _CACHE:
        tables = ray.get(list(refs)) if refs else []
        parts = [t.column(column).combine_chunks().flatten() if column == "members"
                 else t.column(column) for t in tables if t.num_rows]
        ids = np.unique(np.concatenate([np.asarray(p.to_numpy(zero_copy_only=False), dtype=np.int64)
                                        for p in parts])) if parts else np.zeros(0, dtype=np.int64)
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = ids
    return _CACHE[key]


def contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids


def _ok(batch: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.equal(batch.column("status"), "ok"))


def _keys(batch: pa.Table, dedup: DedupConfig, bands: tuple[int, int] | None, parts: int) -> pa.Table:
    ok = _ok(batch)
    ids = ok.column("doc_id").to_numpy()
    if not len(ids):   # a block of bad or filtered records only
        return _KEYS_SCHEMA.empty_table()
    if bands is not None:
        sig = np.frombuffer(b"".join(ok.column("signature").to_pylist()), dtype=np.uint32).reshape(len(ids), -1)
        keys = band_keys(sig, *bands).reshape(-1)
        ids = np.repeat(ids, bands[0])
    else:
        keys = exact_key64(ok.column("exact").to_pylist())
    part = (keys % np.uint64(parts)).astype(np.int64)
    return pa.table({"part": part, "key": keys, "doc_id": ids}, schema=_KEYS_SCHEMA)


def _groups(partition: pa.Table) -> pa.Table:
    groups = candidate_groups(partition.column("key").to_numpy(), partition.column("doc_id").to_numpy())
    return pa.table({"members": pa.array([g.tolist() for g in groups], type=pa.list_(pa.int64()))},
                    schema=_GROUPS_SCHEMA)


def _signed(batch: pa.Table, involved_refs: list) -> pa.Table:
    involved = load_ids(involved_refs, "members")
    ok = _ok(batch)
    keep = contains(involved, ok.column("doc_id").to_numpy())
    return ok.filter(pa.array(keep)).select(["doc_id", "exact", "signature"]).cast(_SIGNED_SCHEMA)


def _resolve(group_refs: list, signed_refs: list, dedup: DedupConfig) -> tuple[pa.Table, dict, dict]:
    import time

    import ray

    start = time.perf_counter()
    # (An empty block may come without columns.)
    groups = [np.asarray(m, dtype=np.int64) for t in ray.get(list(group_refs)) if t.num_rows
              for m in t.column("members").to_pylist()]
    exact, signatures = {}, {}
    for table in ray.get(list(signed_refs)):
        if not table.num_rows:
            continue
        for doc, e, s in zip(table.column("doc_id").to_pylist(), table.column("exact").to_pylist(),
                             table.column("signature").to_pylist(), strict=True):
            exact[doc] = e
            if s is not None:
                signatures[doc] = np.frombuffer(s, dtype=np.uint32)
    dropped = resolve_groups(groups, exact, signatures, dedup)
    ids = sorted(dropped)
    counts: dict[str, int] = {}
    for reason in dropped.values():
        counts[reason] = counts.get(reason, 0) + 1
    info = {"resolve_s": time.perf_counter() - start, "groups": len(groups), "candidates": len(exact)}
    return pa.table({"doc_id": pa.array(ids, type=pa.int64()),
                     "reason": pa.array([dropped[i] for i in ids], type=pa.string())}), counts, info


def find_duplicates(records, dedup: DedupConfig, *, partitions: int = 0):
    """(MaterializedDataset of (doc_id, reason) for every duplicate, {reason: count}, resolve info:
    seconds of the one-task step, candidate groups and records).

    `records` is the materialised read dataset; `partitions` the hash partitions of the groupby
    (default: twice the cluster's CPUs; the result does not depend on it)."""
    import ray
    import ray.data

    empty = ray.data.from_arrow(DUPLICATES_SCHEMA.empty_table()).materialize()
    if not (dedup.exact or dedup.near):
        return empty, {}, {}
    from rayloom.data.dedup import lsh_bands

    parts = partitions or max(2, min(256, 2 * int(ray.cluster_resources().get("CPU", 1))))
    bands = lsh_bands(dedup) if dedup.near else None
    keys = records.map_batches(_keys, fn_kwargs={"dedup": dedup, "bands": bands, "parts": parts},
                               batch_format="pyarrow", batch_size=None)
    groups = keys.groupby("part", num_partitions=parts).map_groups(_groups, batch_format="pyarrow").materialize()
    group_refs = groups.to_arrow_refs()
    signed = records.map_batches(_signed, fn_kwargs={"involved_refs": group_refs}, batch_format="pyarrow",
                                 batch_size=None).materialize()
    table_ref, counts_ref, info_ref = ray.remote(num_returns=3)(_resolve).remote(group_refs, signed.to_arrow_refs(),
                                                                                dedup)
    counts, info = ray.get([counts_ref, info_ref])
    duplicates = ray.data.from_arrow_refs([table_ref]).materialize()
    return duplicates, counts, info
