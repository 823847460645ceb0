"""Reading a committed dataset: its manifest, and Ray Data datasets for Ray Train's `datasets=`.

Training workers read their part with `ray.train.get_dataset_shard("train")` and
`iter_torch_batches(prefetch_batches=...)`, so loading overlaps compute. When the data job ran
with `data.materialize=false` there are no shards: the same datasets are computed from the raw
sources as they are read (rayloom.data.from_sources), with identical columns.
"""

from __future__ import annotations

import json

from rayloom import storage
from rayloom.data.schema import MANIFEST, SPLITS, Manifest
from rayloom.errors import UserError


def _resolve(output: str) -> tuple[str, Manifest]:
    """(the current committed version's path, its manifest), resolved once through the marker."""
    if not storage.is_committed(output):
        raise UserError(f"no committed shards at {output!r} (run `rayloom data` first, or point data.output there)")
    version = storage.resolve_committed(output, "dataset")
    path = storage.join(version, MANIFEST)
    if not storage.exists(path):
        raise UserError(f"no committed shards at {output!r}: the committed version has no {MANIFEST}")
    try:
        return version, Manifest.from_dict(json.loads(storage.read_text(path)))
    except ValueError as exc:
        raise UserError(f"{path} is not a rayloom manifest this version reads: {exc}") from None


def read_manifest(output: str) -> Manifest:
    """The manifest of the committed dataset at `output`, or a UserError when there is none."""
    return _resolve(output)[1]


def open_shards(output: str, splits: tuple[str, ...] = SPLITS) -> dict:
    """{split: ray.data.Dataset} over the Parquet shards listed in the manifest (or computed from
    the sources when the data job did not materialise them). A split without rows is left out.
    The version is resolved once: a dataset re-committed while training reads does not mix in."""
    version, manifest = _resolve(output)
    if not manifest.materialized:
        # pyarrow, numpy and the tokenizing stages: only this path needs them.
        from rayloom.data.from_sources import open_from_sources

        return open_from_sources(version, manifest, splits)
    import ray.data  # Ray stays out of `import rayloom.data`

    datasets = {}
    for split in splits:
        files = manifest.splits[split].files if split in manifest.splits else []
        if not files:
            continue
        uris = [storage.join(version, f) for f in files]
        fs, _ = storage.filesystem(uris[0])
        paths = [storage.filesystem(u)[1] for u in uris]
        datasets[split] = ray.data.read_parquet(paths, filesystem=fs)
    if "train" in splits and "train" not in datasets:
        raise UserError(f"the shards at {output!r} have no train split")
    return datasets
