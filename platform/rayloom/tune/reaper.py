"""Frees the placement groups of trials that have ended.

Each trial's Ray Train controller (an actor the trial's actor owns) reserves a placement group for
its workers. When a trial ends — finished, stopped by ASHA/PBT, or failed — Tune ends the trial's
actor and the controller with it, often before the controller has removed that placement group.
Ray keeps a placement group until both its creator actor and its job are gone, and the sweep's job
lives on, so those reservations would pile up until no trial can start its workers (Ray Train's
own cleaner for this needs the dashboard's State API, which the embedded Ray runs without).

Hand-written because Ray has no API for it: while a sweep runs, a thread removes placement groups
whose creator actor is dead (placement groups that the sweep's driver creates for the trials
themselves have no creator actor and are never touched). Orphans created before this sweep count
too: a sweep resumed in the same process inherits the interrupted sweep's orphans, which would
otherwise hold the CPUs its trials need (seen as a hang on a 4-CPU embedded Ray).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


def orphaned_placement_groups(since_ms: float) -> list:
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    accessor = state._connect_and_get_accessor()
    found = []
    for raw in accessor.get_placement_group_table():
        data = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if data.is_detached or data.state == gcs_pb2.PlacementGroupTableData.REMOVED:
            continue
        if ray.ActorID(data.creator_actor_id).is_nil() or not data.creator_actor_dead:
            continue
        if since_ms and data.placement_group_creation_timestamp_ms and \
                data.placement_group_creation_timestamp_ms < since_ms:
            continue
        found.append(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
    return found


class PlacementGroupReaper(threading.Thread):
    """Context manager: reaps orphaned placement groups every `interval_s` while a sweep runs."""

    def __init__(self, interval_s: float = 1.0):
        super().__init__(daemon=True, name="rayloom-tune-reaper")
        self.interval_s = interval_s
        # 0: every orphan, whenever it was created (see the module docstring).
        self.since_ms = 0.0
        self.stop_event = threading.Event()
        self.removed = 0

    def reap(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in orphaned_placement_groups(self.since_ms):
            try:
                remove_placement_group(pg)
                self.removed += 1
                log.debug("removed placement group %s of an ended trial", pg.id.hex())
            except Exception as exc:  # already removed by its owner meanwhile
                log.debug("could not remove placement group %s: %s", pg.id.hex(), exc)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.reap()
            except Exception as exc:  # the sweep must not fail because cleanup did
                log.warning("placement group cleanup failed: %s", exc)

    def __enter__(self) -> PlacementGroupReaper:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.join(timeout=10)
