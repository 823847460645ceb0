"""Inside Ray Data tasks: group tokenized documents, pack them into rows, write Parquet shards.

Each (split, group) is packed and written by one task as `<split>/part-<group>.parquet`; group
membership is a hash of the record copy (plan.group_of), so shard contents do not depend on
Ray's block layout and a rerun writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayloom import storage
from rayloom.data.packing import pack_lm, pad_preference
from rayloom.data.plan import group_of, mix

SUMMARY_SCHEMA = pa.schema([
    ("split", pa.string()), ("group", pa.int64()), ("file", pa.string()), ("rows", pa.int64()),
    ("documents", pa.int64()), ("pieces", pa.int64()), ("real_tokens", pa.int64()), ("slots", pa.int64()),
    ("truncated", pa.int64()), ("drops", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()),
])


def shard_name(split: str, group: int) -> str:
    return f"{split}/part-{group:05d}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    # Fixed writer settings: the same table always gives the same bytes.
    pq.write_table(table, sink, compression="zstd", row_group_size=1024, write_statistics=False)
    return sink.getvalue().to_pybytes()


def _lists(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """The rows of a list column as numpy arrays (views into one flat buffer)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(array) + 1, dtype=np.int64)
    np.cumsum(pc.list_value_length(array).to_numpy(zero_copy_only=False), out=offsets[1:])
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(array))]


class AssignGroups:
    """Adds the `group` column: which shard of its split a record copy goes to."""

    def __init__(self, num_groups: dict[str, int], seed: int) -> None:
        self.num_groups = num_groups
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        order = batch.column("order").to_numpy()
        is_val = np.asarray(batch.column("split").to_pylist()) == "validation"
        groups = np.where(is_val, group_of(order, self.num_groups.get("validation", 1), self.seed),
                          group_of(order, self.num_groups.get("train", 1), self.seed))
        return batch.append_column("group", pa.array(groups, type=pa.int64()))


class PackGroup:
    """Packs one group (or, streaming, one batch) into rows; writes it when `stage` is set.

    Input rows are tokenized pieces, dropped ones included (status != "ok") so they are counted
    here. With `stage`: returns one SUMMARY_SCHEMA row (the file written and its counts).
    Without: returns the packed rows.
    """

    def __init__(self, kind: str, seq_len: int, packing: bool, pad_id: int, seed: int, stage: str | None) -> None:
        self.kind = kind
        self.seq_len = seq_len
        self.packing = packing
        self.pad_id = pad_id
        self.seed = seed
        self.stage = stage
        # The filesystem object is built here, on the driver, and travels pickled with its endpoint
        # (as Ray Data's own readers do), so workers reach the same S3-compatible server whatever
        # environment they were started with. Credentials still come from the worker's own chain.
        self.fs, self.stage_path = storage.filesystem(stage) if stage is not None else (None, None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # The same order whatever order the rows arrived in.
        batch = batch.sort_by([("order", "ascending"), ("doc_id", "ascending"), ("copy", "ascending"),
                               ("chunk", "ascending")])
        split = batch.column("split")[0].as_py() if batch.num_rows else "train"
        group = batch.column("group")[0].as_py() if "group" in batch.column_names and batch.num_rows else 0
        status = batch.column("status")
        ok_mask = pc.equal(status, "ok")
        drops = Counter(s for s in status.to_pylist() if s != "ok")
        first = pc.and_(ok_mask, pc.equal(batch.column("chunk"), 0))
        documents = int(pc.sum(first.cast(pa.int64())).as_py() or 0)
        truncated = int(pc.sum(pc.and_(first, batch.column("truncated")).cast(pa.int64())).as_py() or 0)
        ok = batch.filter(ok_mask)
        row_seed = int(mix(np.asarray([ok.column("order")[0].as_py() if ok.num_rows else 0],
                                      dtype=np.uint64).astype(np.int64), self.seed, 0x77)[0])
        if self.kind == "preference":
            rows, stats = pad_preference(_lists(ok.column("chosen_input_ids")), _lists(ok.column("chosen_loss_mask")),
                                         _lists(ok.column("rejected_input_ids")),
                                         _lists(ok.column("rejected_loss_mask")), self.seq_len, self.pad_id)
        else:
            rows, stats = pack_lm(_lists(ok.column("input_ids")), _lists(ok.column("loss_mask")), self.seq_len,
                                  self.pad_id, self.packing, row_seed)
        if self.stage is None:
            return rows
        name, digest, size = None, None, 0
        if rows.num_rows:
            name = shard_name(split, group)
            data = parquet_bytes(rows)
            self._write(name, data)
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        return pa.Table.from_pylist([{
            "split": split, "group": group, "file": name, "rows": stats.rows, "documents": documents,
            "pieces": stats.documents, "real_tokens": stats.real_tokens, "slots": stats.slots,
            "truncated": truncated, "drops": json.dumps(dict(sorted(drops.items()))), "sha256": digest,
            "bytes": size,
        }], schema=SUMMARY_SCHEMA)

    def _write(self, name: str, data: bytes) -> None:
        from pyarrow import fs as pafs

        path = f"{self.stage_path}/{name}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)


def pack_group(batch: pa.Table, pack: PackGroup) -> pa.Table:
    """map_groups wants a named function; the packer travels as an argument."""
    return pack(batch)
