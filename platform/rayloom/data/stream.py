"""Stream training rows straight from the raw sources (`data.materialize=false`).

`rayloom data` has already validated, quarantined and deduplicated the sources and recorded the
result (manifest "stream" entry + dropped.parquet). Here the same Ray Data stages - parse,
select, tokenize - run lazily while training reads; packing works per batch instead of per
shard group (no all-to-all shuffle on a streaming path), so rows are as dense as a batch allows.
"""

from __future__ import annotations

import numpy as np

from rayloom import storage
from rayloom.config import DataConfig, ModelConfig
from rayloom.errors import UserError

# Documents per packing batch: larger batches pack denser rows.
_PACK_BATCH_DOCUMENTS = 2048


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

    from rayloom.data.pipeline import _only_ok, read_records, select_and_tokenize
    from rayloom.data.shards import PackGroup
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
    pack = PackGroup(kind, data.seq_len, data.packing, manifest["pad_id"], data.seed, stage=None)
    datasets = {}
    for split in splits:
        if split == "validation" and data.val_fraction == 0 and not len(forced):
            continue
        records = read_records(sources, data, signatures=False)
        tokenized = select_and_tokenize(records, data, model, kind, weights, dropped_ids, forced, only_split=split)
        datasets[split] = (tokenized.map_batches(_only_ok, batch_format="pyarrow", batch_size=None)
                           .map_batches(pack, batch_format="pyarrow", batch_size=_PACK_BATCH_DOCUMENTS))
    return datasets
