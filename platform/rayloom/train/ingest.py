"""How Ray Train's workers read their datasets: Ray's DataConfig, with a leaner streaming executor.

Each split dataset is streamed to the workers by a `streaming_split` coordinator actor that runs
Ray Data's streaming executor; an unsplit one (validation, or every split in `data_mode="stride"`)
runs that executor inside each training worker. The executor's scheduling loop wakes up to ten
times a second for the whole epoch, and each pass recomputes Ray Data's per-operator resource
reservation and refreshes its progress bars. On a machine whose cores the workers need (measured
on the 2-core VM, bench/profile_train.py: ZeRO-2, 2 workers), the coordinator took 0.073 of a core
with them and 0.015 without, and the workers got that CPU back (1.66 -> 1.71 cores).

Neither bounds anything ingest needs: the shards are read in order by one read stage, whose
memory the executor still bounds by its global object-store limits (the reservation only divides
that budget between operators), and training shows its own progress. Ray Data's default turns the
reservation on for the multi-stage pipelines it was built for; rayloom's data job turns it off
too (rayloom.data.pipeline.data_context).
"""

from __future__ import annotations

import ray.train

# What ingest sets on each dataset's DataContext, next to Ray Train's own execution options.
LEAN_INGEST_CONTEXT = {"op_resource_reservation_enabled": False, "enable_progress_bars": False}


class IngestConfig(ray.train.DataConfig):
    """ray.train.DataConfig that sets LEAN_INGEST_CONTEXT before Ray splits the datasets.

    `configure` runs in Ray Train's DatasetManager actor on that actor's own deserialized copies
    of the datasets (checked on Ray 2.60), so the datasets the caller passed to train() keep their
    contexts. The coordinator copies a dataset's context when it starts, and an unsplit dataset's
    iterator carries it to the worker, so both executors see the settings.
    """

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        for ds in datasets.values():
            for name, value in LEAN_INGEST_CONTEXT.items():
                setattr(ds.context, name, value)
        return super().configure(datasets, world_size, worker_handles, worker_node_ids, **kwargs)
