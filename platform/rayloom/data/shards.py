"""Inside Ray Data tasks: select, tokenize, pack and write one block of records at a time.

TokenizePackShards is the job's one heavy stage (tasks, at most data.num_tokenize_actors at once): per
read chunk - about data.read_block_bytes of one file's records, as the read stage left them - it applies source
weights and the split (SelectRecords), shuffles the record copies (record_ids.order_key), tokenizes
them (RecordTokenizer), packs each split's pieces into rows and writes them as Parquet shards of
data.rows_per_shard rows. Tokens never travel through the object store and there is no
all-to-all shuffle (an earlier design tokenized in one stage, then grouped the tokens by a hash
for packing: more than twice as slow on 2 cores, see bench/results/data.md). Chunks are fixed by
the input files and data.read_block_bytes (readers.py), not by Ray's blocks or the cluster, so a
rerun with the same config writes byte-identical files, named after the chunk's first record. Sources are mixed
across shards by the manifest's (seeded) file order and within a shard by the row shuffle.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig
from rayloom.data.packing import PackStats, pack_lm, pad_preference
from rayloom.data.record_ids import locate, mix
from rayloom.data.schema import SPLITS
from rayloom.data.selection import SelectRecords
from rayloom.data.tokenization import TextBackend, Tokenized

SUMMARY_SCHEMA = pa.schema([
    ("split", pa.string()), ("file", pa.string()), ("rows", pa.int64()),
    ("documents", pa.int64()), ("pieces", pa.int64()), ("real_tokens", pa.int64()), ("slots", pa.int64()),
    ("truncated", pa.int64()), ("drops", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()),
])


def shard_name(split: str, first_id: int, n: int) -> str:
    """`<split>/part-<source>-<file>-<row>-<n>.parquet`: the block's first record, then the shard's index."""
    source, file, row = locate(first_id)
    return f"{split}/part-{source:03d}-{file:07d}-{row:011d}-{n:05d}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    # Fixed writer settings: the same table always gives the same bytes. No dictionary encoding:
    # on token columns it made files larger and took 40% more time than zstd alone.
    pq.write_table(table, sink, compression="zstd", use_dictionary=False, row_group_size=1024,
                   write_statistics=False)
    return sink.getvalue().to_pybytes()


# The stages of the jobs a worker process last ran, by job id: built on the worker's first block of a
# job and reused for the job's other blocks (the tokenizer is loaded once per process and job). A few,
# not one: a training run streams its train and validation splits as two jobs through the same workers.
_STAGE: dict[str, TokenizePackShards] = {}
_MAX_STAGES = 4


def tokenize_pack_block(block: pa.Table, *, job_id: str, kwargs: dict) -> pa.Table:
    """Ray Data task function: one block through the job's TokenizePackShards."""
    stage = _STAGE.get(job_id)
    if stage is None:
        while len(_STAGE) >= _MAX_STAGES:
            _STAGE.pop(next(iter(_STAGE)))   # the oldest job's
        stage = _STAGE[job_id] = TokenizePackShards(**kwargs)
    return stage(block)


class TokenizePackShards:
    """Ray Data callable class over blocks of RECORD_SCHEMA rows (batch_size=None: one block per call).

    With `stage`: writes `<split>/part-<block>-<n>.parquet` shards and returns SUMMARY_SCHEMA rows
    (one per file, counts on the first file of each split). Without (the streaming path):
    returns the packed rows of `only_split`.
    """

    def __init__(self, data: DataConfig, model: ModelConfig, kind: str, pad_id: int, select: SelectRecords,
                 stage: str | None, text_backend: TextBackend | None = None) -> None:
        from rayloom.data.tokenization import RecordTokenizer

        self.data = data
        self.kind = kind
        self.pad_id = pad_id
        self.select = select
        self.tokenizer = RecordTokenizer(model, data.seq_len, data.tokenize_batch_size, text_backend)
        # The filesystem object is built on the driver and travels pickled with its endpoint (as
        # Ray Data's own readers do), so workers reach the same S3-compatible server whatever
        # environment they were started with. Credentials still come from the worker's own chain.
        self.fs, self.stage_path = storage.filesystem(stage) if stage is not None else (None, None)

    def __call__(self, block: pa.Table) -> pa.Table:
        # Each read chunk is packed on its own, so the rows do not depend on how Ray grouped the
        # chunks into blocks (or on the cluster).
        chunks = block.column("chunk").to_numpy() if block.num_rows else np.zeros(0, dtype=np.int64)
        _, first = np.unique(chunks, return_index=True)
        out = [self._chunk(block.filter(pa.array(chunks == chunks[i])), int(chunks[i])) for i in sorted(first)]
        if not out:
            return self._pack([], 0)[0] if self.stage_path is None else SUMMARY_SCHEMA.empty_table()
        return pa.concat_tables(out)

    def _chunk(self, block: pa.Table, first_id: int) -> pa.Table:
        selected = self.select(block)
        # A reproducible shuffle of the chunk's record copies (sources and copies interleave).
        selected = selected.take(pa.array(np.argsort(selected.column("order").to_numpy(), kind="stable")))
        splits = selected.column("split").to_numpy(zero_copy_only=False)
        summaries, packed = [], []
        for split in SPLITS:
            take = np.flatnonzero(splits == split)
            if not len(take):
                continue
            part = selected.take(pa.array(take))
            tokenized = self.tokenizer.records(part.column("schema").to_pylist(),
                                               [json.loads(p) for p in part.column("payload").to_pylist()])
            rows, stats = self._pack(tokenized, row_seed=int(mix(np.asarray([first_id]), self.data.seed,
                                                                  0x77 + SPLITS.index(split))[0]))
            if self.stage_path is None:
                packed.append(rows)
            else:
                summaries += self._write_split(split, first_id, tokenized, rows, stats)
        if self.stage_path is None:
            return pa.concat_tables(packed) if packed else self._pack([], 0)[0]
        return pa.Table.from_pylist(summaries, schema=SUMMARY_SCHEMA)

    def _pack(self, tokenized: list[Tokenized], row_seed: int) -> tuple[pa.Table, PackStats]:
        ok = [t for t in tokenized if t.status == "ok"]
        if self.kind == "preference":
            return pad_preference([t.pieces[0][0] for t in ok], [t.pieces[0][1] for t in ok],
                                  [t.pieces[1][0] for t in ok], [t.pieces[1][1] for t in ok],
                                  self.data.seq_len, self.pad_id)
        pieces = [piece for t in ok for piece in t.pieces]
        return pack_lm([ids for ids, _ in pieces], [mask for _, mask in pieces], self.data.seq_len, self.pad_id,
                       self.data.packing, row_seed)

    def _write_split(self, split: str, first_id: int, tokenized: list[Tokenized], rows: pa.Table,
                     stats: PackStats) -> list[dict]:
        counts = {"documents": sum(t.status == "ok" for t in tokenized), "pieces": stats.documents,
                  "truncated": sum(t.truncated and t.status == "ok" for t in tokenized),
                  "drops": json.dumps(dict(sorted(Counter(t.status for t in tokenized if t.status != "ok").items())))}
        real = _row_sums(rows, self.kind)
        out = []
        per_shard = self.data.rows_per_shard
        for n, start in enumerate(range(0, rows.num_rows, per_shard)):
            shard = rows.slice(start, per_shard)
            name = shard_name(split, first_id, n)
            data = parquet_bytes(shard)
            self._write(name, data)
            slots = shard.num_rows * self.data.seq_len * (2 if self.kind == "preference" else 1)
            out.append({"split": split, "file": name, "rows": shard.num_rows,
                        "real_tokens": int(real[start:start + per_shard].sum()), "slots": slots,
                        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                        **(counts if n == 0 else {"documents": 0, "pieces": 0, "truncated": 0, "drops": "{}"})})
        if not out:  # every record of this split was dropped: still count them
            out.append({"split": split, "file": None, "rows": 0, "real_tokens": 0, "slots": 0, "sha256": None,
                        "bytes": 0, **counts})
        return out

    def _write(self, name: str, data: bytes) -> None:
        from pyarrow import fs as pafs

        path = f"{self.stage_path}/{name}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)



def _row_sums(rows: pa.Table, kind: str) -> np.ndarray:
    """Real tokens per packed row (both sides for preference rows)."""
    names = ("attention_mask",) if kind == "lm" else ("chosen_attention_mask", "rejected_attention_mask")
    total = np.zeros(rows.num_rows, dtype=np.int64)
    for name in names:
        column = rows.column(name).combine_chunks()
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
        total += flat.reshape(rows.num_rows, -1).sum(axis=1) if rows.num_rows else 0
    return total
