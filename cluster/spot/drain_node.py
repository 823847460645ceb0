#!/usr/bin/env python3
"""Drain the Ray node this process runs on, then optionally hold until its workloads had time to react.

`ray drain-node` needs `--node-id` here: without it, Ray 2.60's CLI asks the runtime context of a
process that never called `ray.init` and fails. So this connects to the local node (a driver joins
the raylet of the machine it runs on), reads its id, disconnects, and runs
    ray drain-node --address <gcs> --node-id <id> --reason <reason> --reason-message <msg>
                   [--deadline-remaining-seconds N]
GCS then marks the node as draining; Ray Train reports the preemption to its workers (checkpoint at
the next step boundary) and schedules nothing new there; Serve moves replicas away.

Used by interruption_watcher.py (EC2 spot notice, launcher clusters) and by the KubeRay worker
pods' preStop hook (the pod is being evicted: AWS Node Termination Handler, Karpenter, a scale-in).
`--hold-seconds` keeps a preStop hook open so the container is not killed while the workers save
their checkpoint; it ends early once this node runs no more actors.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

REASONS = ("DRAIN_NODE_REASON_PREEMPTION", "DRAIN_NODE_REASON_IDLE_TERMINATION")


def _this_node() -> tuple[str, str]:
    import ray  # the node image has Ray; kept here so --help works anywhere

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        context = ray.get_runtime_context()
        return context.get_node_id(), context.gcs_address
    finally:
        ray.shutdown()


def _busy(node_id: str) -> bool:
    """Whether actors other than drivers still live on the node (best effort: True when unsure)."""
    try:
        from ray.util.state import list_actors

        alive = list_actors(filters=[("node_id", "=", node_id), ("state", "=", "ALIVE")], raise_on_missing_output=False)
        return bool(alive)
    except Exception:  # noqa: BLE001 (no dashboard/state API: keep holding until the time is up)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reason", choices=REASONS, default=REASONS[0])
    parser.add_argument("--reason-message", default="node is being preempted")
    parser.add_argument("--deadline-seconds", type=int, default=None,
                        help="the node is force-killed after this many seconds (omit: no deadline)")
    parser.add_argument("--hold-seconds", type=float, default=0.0,
                        help="after draining, wait up to this long while actors still run on the node")
    parser.add_argument("--ray", default="ray", help="the ray CLI")
    args = parser.parse_args(argv)

    node_id, gcs_address = _this_node()
    command = [args.ray, "drain-node", "--address", gcs_address, "--node-id", node_id,
               "--reason", args.reason, "--reason-message", args.reason_message]
    if args.deadline_seconds is not None:
        command += ["--deadline-remaining-seconds", str(max(0, args.deadline_seconds))]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        print(f"drain_node: `ray drain-node` exited {result.returncode}", file=sys.stderr)
        return result.returncode
    until = time.monotonic() + args.hold_seconds
    while time.monotonic() < until and _busy(node_id):
        time.sleep(2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
