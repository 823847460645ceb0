"""Rank 0's reports, from the Ray Train controller to the driver, through Ray's GCS key-value store.

Ray Train runs rayloom's callback (rayloom.train._monitor) in its controller actor; the driver's
monitor thread reads what the callback sends. The channel between them is the GCS's internal
key-value store, which every Ray process already talks to, and not a `ray.util.queue.Queue`
(rayloom's channel before): a queue is an actor, one more Ray worker process beside every run,
whose task loop wakes every 10 ms whether or not anything is sent. On a 2-core machine each such
process costs two training workers 0.6-0.7% of tokens/s (bench/ray_floor.py). On an idle embedded
cluster, the queue and the driver's waits on it added 0.017-0.018 of a core; the driver reading the
GCS 5 times a second added at most 0.009 (two 30 s windows each).

Why the GCS and not a file or a socket: it reaches wherever the driver and the controller are, a
`ray://` client driver (Ray's client forwards these calls), a job whose Ray workers each run in
their own container (job_packaging=image), a controller on another node; and nothing of it lives
on a worker node that preemption can take away.

`ray.experimental.internal_kv` is the store Ray's own libraries (Serve, Tune, Train, Data) keep
their state in; tests/integration/test_report_channel.py runs this module against the installed
Ray, so a change there fails a test rather than a run.
"""

from __future__ import annotations

import pickle
import uuid

NAMESPACE = "rayloom"
_PREFIX = "train-reports/"


class ReportChannel:
    """One sender (`put`, in the controller) and one receiver (`take`, in the driver).

    The sender numbers what it sends; the receiver reads the numbers in order and deletes each
    entry it has read, so the store holds only what is in flight. Each side counts on its own
    copy of the object: the callback that holds the sender's copy is pickled to the controller
    before anything is sent. `close` (the driver, when the run has ended) deletes whatever is left.

    Items are pickled, as the queue's actor calls pickled them: the store is inside the Ray
    cluster, and a process that can write to it can already run code on every node.
    """

    def __init__(self, channel_id: str | None = None):
        self.id = channel_id or uuid.uuid4().hex
        self._sent = 0
        self._taken = 0

    def _key(self, number: int) -> bytes:
        return f"{_PREFIX}{self.id}/{number:010d}".encode()

    def put(self, item) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(self._key(self._sent), pickle.dumps(item), namespace=NAMESPACE)
        self._sent += 1

    def take(self) -> list:
        """Everything sent and not yet taken, oldest first ([] when nothing new has arrived)."""
        from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

        items = []
        while True:
            key = self._key(self._taken)
            raw = _internal_kv_get(key, namespace=NAMESPACE)
            if raw is None:
                return items
            _internal_kv_del(key, namespace=NAMESPACE)
            items.append(pickle.loads(raw))
            self._taken += 1

    def close(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        _internal_kv_del(f"{_PREFIX}{self.id}/".encode(), del_by_prefix=True, namespace=NAMESPACE)
