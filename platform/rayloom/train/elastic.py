"""Elastic training: how a run maps onto Ray Train V2's elastic scaling, and where each worker
picks up the data stream when the run resumes at another size.

`train.num_workers=[min, max]` becomes `ScalingConfig(num_workers=(min, max))`: Ray Train starts
once `min` workers fit, and restarts the whole worker group from the newest checkpoint when nodes
leave or join (nothing resizes in place). The global batch stays `train.global_batch_size` at every
size (ds_config recomputes the accumulation steps), so the step counter, the LR schedule and the
optimizer state continue as one run.

Data position. Elastic runs read the train split in "stride" mode: every worker reads the same
ordered stream and keeps its data-parallel rank's micro-batches of each global batch. The position
saved in a checkpoint is then a global sample offset into the epoch (`rows_in_epoch`), the same
number at any world size: a resumed worker skips that many rows and splits the following global
batches over the new ranks, so within an epoch no sample is skipped or seen twice.
"""

from __future__ import annotations

import logging
import time

from rayloom.config import TrainConfig
from rayloom.train.checkpoints import TrainerState

log = logging.getLogger(__name__)

# Restarts an elastic run allows when train.max_failures is 0 (each node loss is one).
ELASTIC_MAX_FAILURES = 10


def scaling_kwargs(train: TrainConfig) -> dict:
    """num_workers (an int, or the (min, max) pair) and the resize interval for ScalingConfig."""
    if not train.elastic:
        return {"num_workers": train.num_workers}
    return {"num_workers": (train.min_workers, train.num_workers),
            "elastic_resize_monitor_interval_s": train.elastic_resize_interval_s}


def max_failures(train: TrainConfig) -> int:
    if train.elastic and train.max_failures == 0:
        return ELASTIC_MAX_FAILURES
    return train.max_failures


def global_offset(saved: TrainerState) -> int:
    """Rows of the current epoch the whole run had consumed when `saved` was written."""
    if saved.data_mode == "stride":
        return saved.rows_in_epoch
    # "split": each of the data-parallel workers consumed rows_in_epoch rows of its own split.
    return saved.rows_in_epoch * max(saved.world_size // max(saved.tensor_parallel_size, 1), 1)


def rows_to_skip(saved: TrainerState, data_mode: str, data_parallel_size: int) -> int:
    """How many rows of its stream a worker skips when it resumes from `saved`.

    "stride" streams are the whole epoch, so the global offset is skipped as is. "split" streams
    are Ray Data's per-worker splits: each skips its share of the global offset (exact when the
    size did not change; Ray Data assigns blocks dynamically, hence elastic runs use "stride")."""
    offset = global_offset(saved)
    if data_mode == "stride":
        return offset
    saved_dp = max(saved.world_size // max(saved.tensor_parallel_size, 1), 1)
    if saved.data_mode == "split" and saved_dp != data_parallel_size:
        log.warning("resuming a split-stream run at another data-parallel size (%d -> %d): rows are re-split "
                    "approximately; elastic runs (train.num_workers=[min, max]) read in stride mode, which is exact",
                    saved_dp, data_parallel_size)
    return offset // data_parallel_size


def rank_rows(offset: int, total_rows: int, micro: int, global_batch: int, dp: int, dp_rank: int) -> list[int]:
    """The row indices (of one epoch's ordered stream) rank `dp_rank` of `dp` trains on after
    skipping `offset` rows, in stride mode: each global batch is cut into micro-batches and rank r
    takes those at r, r + dp, ... (the same rule train_fn's step iterator applies). An incomplete
    global batch at the end of the epoch is dropped."""
    rows: list[int] = []
    start = offset
    while start + global_batch <= total_rows:
        micro_batches = [list(range(start + i * micro, start + (i + 1) * micro)) for i in range(global_batch // micro)]
        for mb in micro_batches[dp_rank::dp]:
            rows += mb
        start += global_batch
    return rows


class PreemptionWatch:
    """Asks Ray Train whether a node of the run is draining; reports each drained node once.

    `ray.train.get_preemption_info` is a collective (a round trip through Ray Train's
    synchronization actor), so every rank must call it at the same steps: rank 0 decides when, by
    its own clock, and the decision travels in the per-step all-reduce (`due`'s value). A check is
    due at every `every`-th step once `interval_s` has passed since the last one. Ray Train's
    PreemptionWatcher refreshes what the call returns every 5 s (RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S),
    so asking at every step bought no earlier notice and cost a round trip per step (measured on
    the 2-core VM, bench/profile_train.py: 0.8% of the loop's time, and the synchronization actor
    0.013 of a core).
    """

    # Past the deadline, how long to wait for Ray Train to tear the workers down before training on.
    SLACK_S = 30.0

    def __init__(self, every: int, interval_s: float, rank: int, clock=time.monotonic):
        self.every, self.interval_s, self.rank, self.clock = every, interval_s, rank, clock
        self.handled: set[str] = set()
        self.last_check = float("-inf")

    def due(self, next_step: int) -> float:
        """Rank 0's vote (1.0 or 0.0) for checking at the end of `next_step`; the others vote 0."""
        due = (self.rank == 0 and self.every > 0 and next_step % self.every == 0
               and self.clock() - self.last_check >= self.interval_s)
        return float(due)

    def poll(self, step: int):
        """The collective check after `step`; every rank calls it at the steps the all-reduced vote picked."""
        import ray.train

        self.last_check = self.clock()
        info = ray.train.get_preemption_info()
        if info is None or set(info.preempted_node_ids) <= self.handled:
            return None
        self.handled.update(info.preempted_node_ids)
        if self.rank == 0:
            log.warning("node(s) %s of this run are being preempted (deadline %s): checkpointing at step %d",
                        ", ".join(n[:8] for n in info.preempted_node_ids), info.deadline_ms, step)
        return info

    def wait_out(self, info) -> None:
        """Sleep until the drained node's deadline (plus slack); no deadline -> train on."""
        if not info.deadline_ms:
            return
        until = info.deadline_ms / 1000.0 + self.SLACK_S
        while time.time() < until:
            time.sleep(min(1.0, max(until - time.time(), 0.0)))
        if self.rank == 0:
            log.warning("the drained node(s) did not leave by their deadline; training on")
