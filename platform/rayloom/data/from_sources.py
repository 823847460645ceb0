"""Training rows computed straight from the raw sources (`data.materialize=false`).

`rayloom data` has already validated, quarantined and deduplicated the sources and recorded the
result (the manifest's `stream` entry + dropped.parquet). Here the same Ray Data stages - parse,
select, tokenize, pack (shards.TokenizePackShards, one block per source file) - run lazily
while training reads, so the rows are the ones the materialising job would write, in block order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig
from rayloom.data.scan import read_records
from rayloom.data.schema import FileEntry, Manifest, SourceEntry
from rayloom.data.shard_writer import PackJob, tokenize_and_pack
from rayloom.data.sources import SourceFiles, resolve_sources
from rayloom.errors import UserError


def _typed(schema, values: dict):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def _check_unchanged(sources: list[SourceFiles], recorded: list[SourceEntry]) -> None:
    for source, entry in zip(sources, recorded, strict=True):
        now = [FileEntry(path=rel, size=size) for rel, size in zip(source.relatives, source.sizes, strict=True)]
        if now != entry.files:
            raise UserError(f"the files of source {entry.uri!r} changed since `rayloom data` validated them; "
                            "run `rayloom data` again before streaming from it")


def open_from_sources(output: str, manifest: Manifest, splits: tuple[str, ...]) -> dict:
    """{split: ray.data.Dataset} of packed rows, computed from the raw sources as they are read."""
    import ray

    spec = manifest.stream
    if spec is None:
        raise UserError(f"the manifest at {output!r} says materialized=false but has no stream spec")
    data: DataConfig = _typed(DataConfig, spec.data)
    sources = resolve_sources(data.sources)
    _check_unchanged(sources, manifest.sources)
    dropped = pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(output, spec.dropped))))
    job = PackJob(data=data, model=_typed(ModelConfig, spec.model), kind=manifest.kind,
                  weights=[s.config.weight for s in sources], duplicates=[ray.put(dropped.select(["doc_id"]))],
                  forced=np.asarray(spec.forced_validation, dtype=np.int64), pad_id=manifest.pad_id)
    datasets = {}
    for split in splits:
        if split == "validation" and data.val_fraction == 0 and not len(job.forced):
            continue
        records = read_records(sources, data, signatures=False)
        datasets[split] = tokenize_and_pack(records, job, num_blocks=sum(len(s.files) for s in sources),
                                            only_split=split)
    return datasets
