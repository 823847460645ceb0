"""Stream training rows straight from the raw sources (`data.materialize=false`).

`rayloom data` has already validated, quarantined and deduplicated the sources and recorded the
result (manifest "stream" entry + dropped.parquet). Here the same Ray Data stages - parse,
select, tokenize, pack (shards.TokenizePackShards, one block per source file) - run lazily
while training reads, so the rows are the ones the materialising job would write, in block order.
"""

from __future__ import annotations

import numpy as np

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig
from rayloom.errors import UserError


def _typed(schema, values: dict):
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def _check_unchanged(sources, recorded: list[dict]) -> None:
    for source, entry in zip(sources, recorded, strict=True):
        now = [{"path": rel, "size": size} for rel, size in zip(source.relatives, source.sizes, strict=True)]
        if now != entry["files"]:
            raise UserError(f"the files of source {entry['uri']!r} changed since `rayloom data` validated them; "
                            "run `rayloom data` again before streaming from it")


def open_stream(output: str, manifest: dict, splits: tuple[str, ...]) -> dict:
    """{split: ray.data.Dataset} of packed rows, computed from the raw sources as they are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayloom.data.pipeline import read_records, tokenize_and_pack
    from rayloom.data.sources import resolve_sources

    spec = manifest["stream"]
    data: DataConfig = _typed(DataConfig, spec["data"])
    model: ModelConfig = _typed(ModelConfig, spec["model"])
    sources = resolve_sources(data.sources)
    _check_unchanged(sources, manifest["sources"])
    dropped = pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(output, spec["dropped"]))))
    dropped_ids = dropped.column("doc_id").to_numpy()
    forced = np.asarray(spec["forced_validation"], dtype=np.int64)
    weights = [s.config.weight for s in sources]
    kind = manifest["kind"]
    datasets = {}
    for split in splits:
        if split == "validation" and data.val_fraction == 0 and not len(forced):
            continue
        records = read_records(sources, data, signatures=False)
        datasets[split] = tokenize_and_pack(records, data, model, kind, weights, dropped_ids, forced,
                                            manifest["pad_id"], num_blocks=sum(len(s.files) for s in sources),
                                            only_split=split)
    return datasets
