"""Ray Data datasets over committed shards, for Ray Train's `datasets=` argument.

Training workers read their part with `ray.train.get_dataset_shard("train")` and
`iter_torch_batches(prefetch_batches=...)`, so loading overlaps compute. When the data job ran
with `data.materialize=false` there are no shards: the same datasets are computed from the raw
sources as they are read (rayloom.data.stream), with identical columns.
"""

from __future__ import annotations

import json

from rayloom import storage
from rayloom.data.schema import MANIFEST, SPLITS
from rayloom.errors import UserError


def read_manifest(output: str) -> dict:
    path = storage.join(output, MANIFEST)
    if not storage.is_committed(output) or not storage.exists(path):
        raise UserError(f"no committed shards at {output!r} (run `rayloom data` first, or point data.output there)")
    return json.loads(storage.read_text(path))


def open_shards(output: str, splits: tuple[str, ...] = SPLITS) -> dict:
    """{split: ray.data.Dataset} over the Parquet shards listed in the manifest."""
    import ray.data

    manifest = read_manifest(output)
    if not manifest.get("materialized", True):
        from rayloom.data.stream import open_stream

        return open_stream(output, manifest, splits)
    datasets = {}
    for split in splits:
        files = manifest["splits"].get(split, {}).get("files", [])
        if not files:
            continue
        uris = [storage.join(output, f) for f in files]
        fs, _ = storage.filesystem(uris[0])
        paths = [storage.filesystem(u)[1] for u in uris]
        datasets[split] = ray.data.read_parquet(paths, filesystem=fs)
    if "train" in splits and "train" not in datasets:
        raise UserError(f"the shards at {output!r} have no train split")
    return datasets
