"""Ray Data pipeline: read -> validate/clean -> dedup -> tokenize -> pack -> shards; streaming to Train.

`run_data_job(cfg)` is the `rayloom data` command and `build_dataset(data, model, output)` the
pipeline under it; `open_shards(output)` gives the datasets for Ray Train, `read_manifest(output)`
the typed `Manifest` that describes them, and `default_output(cfg)` where they are by default.
The shard columns are in `rayloom.data.schema`. Importing this package does not import Ray.
"""

from rayloom.data.pipeline import DataResult, build_dataset, default_output, run_data_job
from rayloom.data.schema import Manifest
from rayloom.data.shards_reader import open_shards, read_manifest

__all__ = ["DataResult", "Manifest", "build_dataset", "default_output", "open_shards", "read_manifest",
           "run_data_job"]
