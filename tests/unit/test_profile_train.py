"""bench/profile_train.py's sorting of py-spy samples into loop phases and of processes into kinds."""

from __future__ import annotations

import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import profile_train  # noqa: E402


def _stack(*functions: str) -> str:
    return ";".join(f"{f} (some/file.py:{i})" for i, f in enumerate(functions))


def test_a_sample_belongs_to_the_first_phase_found_below_the_loop():
    phase = profile_train._phase
    assert phase(_stack("run", "train_fn", "backward", "all_reduce"), "train_fn") == "backward"
    assert phase(_stack("run", "train_fn", "_iter_steps", "iter_torch_batches"), "train_fn") == "data"
    assert phase(_stack("_worker_main", "step", "_take_model_step"), "_worker_main") == "optimizer step"
    assert phase(_stack("train_fn", "loss_sum", "forward"), "train_fn") == "forward"
    assert phase(_stack("train_fn", "all_reduce"), "train_fn") == "collectives (loop)"
    assert phase(_stack("train_fn", "report"), "train_fn") == "report + metrics"
    assert phase(_stack("train_fn", "add_step"), "train_fn") == "other (loop bookkeeping)"
    # py-spy's own spelling of methods and nested functions (checked on its raw output).
    assert phase(_stack("train_fn", "DeepSpeedEngine.step", "DeepSpeedZeroOptimizer_Stage3.step"),
                 "train_fn") == "optimizer step"
    assert phase(_stack("train_fn", "instrument_w_nvtx.<locals>.wrapped_fn", "DeepSpeedEngine.backward"),
                 "train_fn") == "backward"
    assert phase(_stack("train_fn", "PreemptionWatch.poll"), "train_fn") == "report + metrics"
    # Frames above the loop (Ray's thread runner) never decide the phase.
    assert phase(_stack("backward", "train_fn", "add_step"), "train_fn") == "other (loop bookkeeping)"


def test_processes_get_short_stable_names():
    label = profile_train._label
    assert label(["ray::RayTrainWorker.run_train_fn"]) == "ray::RayTrainWorker"
    assert label(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_ip_address=127.0.0.1"]) == "raylet"
    assert label(["/usr/bin/python", "/repo/bench/bench_train.py", "--worker", "ds"]) == "deepspeed direct worker"
    assert label([]) == "?"
