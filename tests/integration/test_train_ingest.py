"""rayloom's ingest config (rayloom.train.ingest): both of Ray Data's executors a training run
starts, the split coordinator's and an unsplit dataset's in the worker, get the lean settings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rayloom.train.ingest import LEAN_INGEST_CONTEXT, IngestConfig

pytestmark = pytest.mark.integration


def test_split_and_unsplit_datasets_run_with_the_lean_context(ray_local):
    import ray.data
    from ray.data import ExecutionOptions

    datasets = {"train": ray.data.range(64, override_num_blocks=4), "validation": ray.data.range(8)}
    for ds in datasets.values():  # Ray Data's defaults, which a plain ray.train.DataConfig keeps
        assert ds.context.op_resource_reservation_enabled and ds.context.enable_progress_bars
    config = IngestConfig(datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True))
    shards = config.configure(datasets, world_size=2, worker_handles=None, worker_node_ids=None)

    coordinator = shards[0]["train"]._coord_actor  # the streaming_split coordinator's own context
    context = ray.get(coordinator.get_dataset_context.remote())
    unsplit = shards[1]["validation"]._base_dataset.context  # what the worker's executor runs with
    for ctx in (context, unsplit):
        assert {name: getattr(ctx, name) for name in LEAN_INGEST_CONTEXT} == LEAN_INGEST_CONTEXT
        assert ctx.execution_options.preserve_order  # Ray Train's own ingest options still apply
    # The streams still work: read together (an epoch starts once every split has asked for it),
    # the two shards hold every row once.
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda shard: [r["id"] for r in shard["train"].iter_rows()], shards))
    assert sorted(parts[0] + parts[1]) == list(range(64)) and len(parts[0]) == len(parts[1])
