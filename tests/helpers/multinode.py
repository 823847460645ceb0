"""A real multi-node Ray cluster on this machine for the elastic-training tests: a head and worker
nodes, each a separate raylet with its own object store and socket (ray.cluster_utils.Cluster, what
Ray's own fault-tolerance tests use). Each worker node holds one `train_slot` resource, so with
`train.worker_resources={train_slot: 1}` it hosts exactly one training worker.

Node loss is real: `kill_raylet` SIGKILLs a node's raylet (its workers die with it and the GCS marks
the node dead); `drain` is Ray's own drain API (`ray drain-node`'s call), a preemption notice with a
deadline. Callers trigger both from `train(on_report=...)` at a known step, never from a timer.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

SLOT = "train_slot"


class LocalCluster:
    def __init__(self, cluster):
        self.cluster = cluster
        self.workers: list = []

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker_node(self):
        """Start one more worker node. Callable from `train(on_report=...)`, which runs in the driver's
        monitor thread: Ray's node object registers a SIGTERM handler for this process, which Python
        allows only on the main thread, so off it that registration is skipped (the cluster's
        shutdown stops the node all the same)."""
        import threading

        import ray._private.utils as ray_utils

        saved = ray_utils.set_sigterm_handler
        if threading.current_thread() is not threading.main_thread():
            ray_utils.set_sigterm_handler = lambda handler: None
        try:
            node = self.cluster.add_node(num_cpus=1, resources={SLOT: 1}, object_store_memory=80 * 1024 * 1024)
        finally:
            ray_utils.set_sigterm_handler = saved
        self.workers.append(node)
        return node

    def kill_raylet(self, node) -> int:
        """SIGKILL the node's raylet (no graceful anything); returns its pid."""
        process = node.all_processes["raylet"][0].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return process.pid

    def drain(self, node, deadline_s: float, reason: str = "DRAIN_NODE_REASON_PREEMPTION") -> None:
        """Mark the node as draining with a deadline, as a spot notice / `ray drain-node` does."""
        import ray
        from ray.core.generated import autoscaler_pb2

        deadline_ms = int(time.time() * 1000 + deadline_s * 1000)
        gcs = ray._raylet.GcsClient(address=self.address)
        accepted, message = gcs.drain_node(node.node_id, autoscaler_pb2.DrainNodeReason.Value(reason),
                                           "rayloom test: spot notice", deadline_ms)
        assert accepted, message

    def alive_nodes(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n["Alive"])


def leave_embedded_ray() -> bool:
    """Disconnect this process from the test session's embedded Ray (tests/conftest.py ray_local)
    so it can join its own cluster; True when there was one to come back to."""
    import ray

    was = ray.is_initialized()
    if was:
        ray.shutdown()
    return was


def restore_embedded_ray(was: bool) -> None:
    """Start the session's embedded Ray again (4 logical CPUs, as ray_local does). Without it the
    tests that run after a multi-node test get Ray's auto-init with os.cpu_count() CPUs: on 2 cores
    a Ray Train run that streams a dataset then deadlocks (its workers hold every CPU, Ray Data's
    read tasks wait for one)."""
    if was:
        from rayloom.config import ClusterConfig
        from rayloom.runtime import init_ray

        init_ray(ClusterConfig(num_cpus=4))


@contextmanager
def local_cluster(num_worker_nodes: int = 2, head_cpus: int = 2):
    """Start a head (no train slot) and `num_worker_nodes` worker nodes, connect this process to it,
    and stop every node on exit. Node deaths are detected within a few seconds (health checks every
    second, 3 misses) and Ray Train's preemption watcher polls every half second."""
    import ray
    from ray.cluster_utils import Cluster

    from rayloom.waiting import wait_until

    was_embedded = leave_embedded_ray()
    saved = os.environ.get("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S")
    # Read by Ray Train's controller, which the raylets start with this environment.
    os.environ["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"] = "0.5"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": False, "object_store_memory": 150 * 1024 * 1024,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0}})
    local = LocalCluster(cluster)
    try:
        for _ in range(num_worker_nodes):
            local.add_worker_node()
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        wait_until(lambda: local.alive_nodes() == num_worker_nodes + 1, timeout_s=60,
                   message="worker nodes to join the local cluster")
        yield local
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", None)
        else:
            os.environ["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"] = saved
        restore_embedded_ray(was_embedded)
