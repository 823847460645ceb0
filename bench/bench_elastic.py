"""Elastic and spot training on a real local multi-node Ray cluster (issue #16): what a preemption
costs, noticed (a drain with a deadline: the workers checkpoint at the next step boundary) and
unnoticed (a worker node's raylet SIGKILLed right after a checkpoint's report), against the same run
uninterrupted; what converting a checkpoint to a universal one costs next to saving it; and
tokens/s at 1, 2 and 3 workers (one per node).

Each worker node is a separate raylet holding one `train_slot`; faults are injected from the
driver's on_report hook at a fixed checkpoint, as in tests/integration/test_train_elastic.py.
Run: `python bench/run.py elastic` (or `--quick`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the multi-node cluster helper lives with the tests

DESCRIPTION = "elastic training: steps/wall time lost per preemption, universal conversion vs save, tokens/s at 1-3 workers"

EVERY = 4


def _overrides(root: str, name: str, steps: int, workers: str) -> list[str]:
    from helpers.multinode import SLOT

    return ["model=tiny-2l", "data.seq_len=64", f"train.num_workers={workers}", "train.micro_batch_size=2",
            "train.global_batch_size=12", f"+train.worker_resources.{SLOT}=1", "train.elastic_resize_interval_s=2",
            f"train.checkpoint_every={EVERY}", f"train.max_steps={steps}", "train.warmup_steps=0", "train.lr=3e-3",
            f"storage.root={root}", "train.export=false", "tracking.progress_bar=false", "train.eval_batches=0",
            "tracking.report_interval_s=0.5", f"train.run_name={name}",
            # A drain check at every step, as Ray Train's watcher polls every 0.5 s in the local
            # cluster (the default waits 2 s between checks; a short run could end first).
            "train.preemption_check_interval_s=0"]


def _run(root: str, name: str, steps: int, workers: str, rows, hook=None, extra: tuple[str, ...] = ()):
    import ray

    from rayloom.config import compose
    from rayloom.train import train

    started = time.perf_counter()
    result = train(compose("train", [*_overrides(root, name, steps, workers), *extra]),
                   datasets={"train": ray.data.from_items(rows)}, on_report=hook)
    return result, time.perf_counter() - started


def _steady_tokens_per_s(result) -> float:
    values = [h["tokens_per_s"] for h in result.history[2:] if h.get("tokens_per_s")]
    return statistics.median(values) if values else float("nan")


def run(quick: bool = False):
    import harness
    from helpers.multinode import local_cluster
    from helpers.train_fixtures import pretrain_rows

    from rayloom.config import compose
    from rayloom.models import resolve_model_dir

    steps = 16 if quick else 24
    rows = pretrain_rows(resolve_model_dir(compose("train", ["model=tiny-2l"]).model), seq_len=64, max_rows=96)
    result = harness.Result(name="elastic", description=DESCRIPTION, machine=harness.machine_info())
    with tempfile.TemporaryDirectory(prefix="rayloom-bench-elastic-") as root, local_cluster(num_worker_nodes=2) as cl:
        steady, steady_wall = _run(root, "steady", steps, "[1,2]", rows)
        result.rows.append({"system": "uninterrupted, 2 workers", "steps": steady.step, "wall_s": steady_wall,
                            "steps_lost": 0, "restart_s": 0.0})

        for noticed in (True, False):
            victim, events = cl.workers[-1], {}

            def hook(history, checkpoint, victim=victim, events=events, noticed=noticed):
                last = history[-1]
                if "fault_at" not in events and checkpoint and last["step"] >= EVERY and last["num_workers"] == 2:
                    if noticed and "drained" not in events:
                        events["drained"] = True
                        cl.drain(victim, deadline_s=120)
                        return
                    if not noticed or last.get("preemption_checkpoint"):
                        events["fault_at"], events["fault_time"] = last["step"], time.perf_counter()
                        events["last_before"] = last["step"]
                        cl.kill_raylet(victim)
                elif "fault_at" in events and "restart_s" not in events and last["num_workers"] == 1:
                    events["restart_s"] = time.perf_counter() - events["fault_time"] - sum(
                        h.get("step_time_s", 0.0) for h in history)
                    events["resumed_from"] = history[0]["step"] - 1

            name = "noticed" if noticed else "unnoticed"
            res, wall = _run(root, name, steps, "[1,2]", rows, hook)
            # Steps done at 2 workers that the 1-worker restart had to train again.
            done_before = max(h["step"] for h in res.history if h["num_workers"] == 2)
            resumed = res.resumes[-1]
            result.rows.append({"system": f"{name} preemption (2 -> 1 worker)", "steps": res.step, "wall_s": wall,
                                "steps_lost": done_before - resumed["from_step"],
                                "restart_s": events.get("restart_s", float("nan")),
                                "convert_s": resumed.get("convert_s", float("nan")),
                                "save_s": statistics.median([h["checkpoint_save_s"] for h in res.history
                                                             if h.get("checkpoint_save_s")] or [float("nan")])})
            cl.workers.remove(victim)
            cl.add_worker_node()

        if not quick:
            cl.add_worker_node()
        for workers in (1, 2) if quick else (1, 2, 3):
            res, wall = _run(root, f"scale{workers}", steps, str(workers), rows)
            result.rows.append({"system": f"fixed, {workers} worker(s)", "steps": res.step, "wall_s": wall,
                                "tokens_per_s": _steady_tokens_per_s(res)})
        # What asking for preemption notices every step costs (a Ray Train collective per step).
        res, wall = _run(root, "nocheck", steps, "2", rows, extra=("train.preemption_check_every=0",))
        result.rows.append({"system": "fixed, 2 worker(s), no preemption check", "steps": res.step, "wall_s": wall,
                            "tokens_per_s": _steady_tokens_per_s(res)})

    by = {row["system"]: row for row in result.rows}
    noticed, unnoticed = by["noticed preemption (2 -> 1 worker)"], by["unnoticed preemption (2 -> 1 worker)"]
    result.ratios["steps lost, noticed preemption"] = float(noticed["steps_lost"])
    result.ratios["steps lost, unnoticed preemption"] = float(unnoticed["steps_lost"])
    result.ratios["universal conversion / checkpoint save (time)"] = noticed["convert_s"] / noticed["save_s"]
    result.ratios["restart after a node loss / checkpoint save (time)"] = unnoticed["restart_s"] / unnoticed["save_s"]
    one = by["fixed, 1 worker(s)"]["tokens_per_s"]
    for workers in (2,) if quick else (2, 3):
        result.ratios[f"tokens/s {workers} workers / {workers} x 1 worker"] = (
            by[f"fixed, {workers} worker(s)"]["tokens_per_s"] / (workers * one))
    result.ratios["tokens/s with / without the per-step preemption check (2 workers)"] = (
        by["fixed, 2 worker(s)"]["tokens_per_s"] / by["fixed, 2 worker(s), no preemption check"]["tokens_per_s"])
    result.goals.update({"steps lost, noticed preemption": "0",
                         "steps lost, unnoticed preemption": f"<= {EVERY} (one checkpoint interval)"})
    result.notes += [
        f"tiny-2l, 64-token rows, global batch 12 rows at every size, checkpoint every {EVERY} steps, {steps} steps; "
        "a head + 2 worker nodes (3 for the 3-worker row), each a separate raylet on this machine.",
        "noticed: `ray drain-node`'s API with a 120 s deadline at the first checkpoint report; the workers checkpoint "
        "at the next step boundary and the node is SIGKILLed once that checkpoint is reported. unnoticed: SIGKILL "
        "right after a checkpoint's report (the workers have run ahead of the driver by then).",
        "restart_s: from the kill to the first report of the 1-worker run, minus its training steps (node-death "
        "detection, a new worker group, the universal conversion, DeepSpeed start-up).",
        "All workers share 2 CPU cores here, so tokens/s does not grow with workers on this machine; the rows show "
        "what a resize costs, not GPU scaling.",
    ]
    return result
