"""Inside the tokenize/pack actors: keep the records that survived, apply source weights, assign splits.

Shared by the materialising job and the streaming path, so both see the same records.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayloom.data.record_ids import is_validation, num_copies, order_key, source_of

SELECTED_SCHEMA = pa.schema([
    ("doc_id", pa.int64()), ("copy", pa.int64()), ("split", pa.string()), ("order", pa.uint64()),
    ("schema", pa.string()), ("payload", pa.string()),
])


class SelectRecords:
    """ok records that are not duplicates -> one row per copy, with split and shuffle order.

    `duplicates` is a list of object refs of Arrow tables with a `doc_id` column (loaded once per
    worker process, never by the driver); `only_split` keeps one split (the streaming path builds
    one dataset per split).
    """

    def __init__(self, weights: list[float], seed: int, val_fraction: float, duplicates: list, forced_validation,
                 only_split: str | None = None) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.seed = seed
        self.val_fraction = val_fraction
        self.duplicates = duplicates
        self.forced_validation = forced_validation
        self.only_split = only_split

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rayloom.data.dedup_ray import contains, load_ids

        forced = np.asarray(self.forced_validation, dtype=np.int64)
        batch = batch.filter(pc.equal(batch.column("status"), "ok"))
        ids = batch.column("doc_id").to_numpy()
        keep = ~contains(load_ids(self.duplicates), ids)
        batch, ids = batch.filter(pa.array(keep)), ids[keep]
        copies = num_copies(ids, self.weights[source_of(ids)], self.seed)
        val = is_validation(ids, self.val_fraction, self.seed, forced)
        if self.only_split is not None:
            copies = np.where(val == (self.only_split == "validation"), copies, 0)
        take = np.repeat(np.arange(len(ids)), copies)
        # copy index within each record's run of copies
        starts = np.repeat(np.cumsum(copies) - copies, copies)
        copy = np.arange(len(take)) - starts
        rep_ids = ids[take]
        return pa.table({
            "doc_id": pa.array(rep_ids, type=pa.int64()),
            "copy": pa.array(copy, type=pa.int64()),
            "split": pa.array(np.where(val[take], "validation", "train").tolist(), type=pa.string()),
            "order": pa.array(order_key(rep_ids, copy, self.seed), type=pa.uint64()),
            "schema": batch.column("schema").take(pa.array(take, type=pa.int64())),
            "payload": batch.column("payload").take(pa.array(take, type=pa.int64())),
        }, schema=SELECTED_SCHEMA)
