"""Set-up of every Ray worker process of the embedded cluster (Ray's `worker_process_setup_hook`).

rayloom.runtime.init_ray names `embedded_cluster` in the job's runtime_env when it starts the
embedded Ray without a dashboard. Ray imports this module in each worker process of the job
(tasks, actors, detached actors) before their code runs, so it keeps to the standard library.
"""

from __future__ import annotations

import logging

# Ray Train's PlacementGroupCleaner (a detached actor beside every run, Ray 2.60) asks Ray's state
# API once a second whether the run's controller is alive. The dashboard serves that API, and the
# embedded cluster runs without it (cluster.include_dashboard=false), so every check fails and logs
# this warning: with cluster.log_to_driver=true it reached the console through every run, and each
# line costs the log monitor, the GCS and the driver CPU that the training workers lack on a small
# machine. The cleanup the check guards is moot there: the embedded cluster, its placement groups
# included, ends with the driver process.
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_UNAVAILABLE = "Failed to query Ray Train Controller actor state"


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with `prefix`; lets the rest through."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def embedded_cluster() -> None:
    """The hook: quiet the one warning that the embedded cluster's missing state API causes."""
    logger = logging.getLogger(CLEANER_LOGGER)
    if not any(isinstance(f, _DropMessage) and f.prefix == CLEANER_UNAVAILABLE for f in logger.filters):
        logger.addFilter(_DropMessage(CLEANER_UNAVAILABLE))
