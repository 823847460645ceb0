"""Where a training step's time goes: rayloom (Ray Train + DeepSpeed) vs DeepSpeed launched directly.

`python bench/profile_train.py [--workers 2] [--deepspeed zero2] [--steps 100] [--seconds 10]
[--rayloom-only]` (py-spy on PATH)

Both launchers train the same model on the same packed rows with the same DeepSpeed config
(bench_train.py's settings). Once a launcher's workers are inside their training loop, two
windows of `--seconds` each:

1. nothing attached: the CPU time of every process on the machine (psutil), of each worker's
   threads (/proc) and of the machine as a whole, so the CPU that is not the workers' (Ray's
   control plane, Ray Data, the driver) is named;
2. py-spy samples every training process (wall clock, idle included, `--nonblocking` so the
   process is never paused) and each sample of the thread running the loop is put in a phase by
   the frames on its stack: data (waiting for the next micro-batches), forward, backward, optimizer
   step, collectives the loop calls itself, report + metrics, other loop bookkeeping.

It reports, it asserts nothing. Written as bench/results/profile_train.json + .md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_train
import harness

# Phase of a loop sample: the first phase (in this order) one of whose functions is on the stack
# below the loop's own frame.
PHASES = (
    ("data", {"_iter_steps", "iter_torch_batches"}),
    ("report + metrics", {"report", "save_and_report", "metrics", "memory_gib", "report_metrics", "poll", "wait_out"}),
    ("backward", {"backward"}),
    ("optimizer step", {"step"}),
    ("forward", {"loss_sum", "_lm_loss_sum", "forward"}),
    ("collectives (loop)", {"all_reduce", "get_global_grad_norm"}),
)
LOOP_FRAMES = {"rayloom": "train_fn", "deepspeed direct": "_worker_main"}


def _phase(stack: str, loop: str) -> str:
    names = [frame.split(" (")[0] for frame in stack.split(";")]
    # py-spy names a method Class.method and a nested function outer.<locals>.inner: the phases
    # name the function itself (DeepSpeedEngine.step is the optimizer step).
    below = {name.rsplit(".", 1)[-1] for name in names[max(i for i, n in enumerate(names) if n == loop) + 1:]}
    return next((phase for phase, functions in PHASES if below & functions), "other (loop bookkeeping)")


def _label(cmdline: list[str]) -> str:
    """A short, stable name for a process on the machine."""
    text = " ".join(cmdline)
    if text.startswith("ray::"):
        return text.split()[0].split(".")[0]
    for pattern, name in ((r"raylet", "raylet"), (r"gcs_server", "gcs_server"), (r"dashboard", "ray dashboard"),
                          (r"log_monitor", "ray log_monitor"), (r"runtime_env", "ray runtime_env agent"),
                          (r"py-spy", "py-spy (the profiler)"), (r"torch\.distributed\.run", "torchrun"),
                          (r"bench_train\.py --worker", "deepspeed direct worker"),
                          (r"profile_train\.py", "driver (this script)"), (r"default_worker\.py", "ray idle worker")):
        if re.search(pattern, text):
            return name
    return Path(cmdline[0]).name if cmdline else "?"


def _cpu_times() -> dict[int, tuple[str, float]]:
    import psutil

    out = {}
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            out[proc.pid] = (_label(proc.info["cmdline"] or []), times.user + times.system)
    return out


def _rates(used: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU-seconds per wall second (cores) of each key over the window, largest first, the tiny ones left out."""
    return {k: round(v / seconds, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v / seconds >= 0.005}


def _cpu_by_label(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each kind of process used between the two readings (per pid, so a process that
    started in between counts from zero)."""
    used: dict[str, float] = collections.defaultdict(float)
    for pid, (label, cpu) in after.items():
        used[label] += cpu - before.get(pid, (label, 0.0))[1]
    return used


def _thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of every thread of the training processes, by thread name (summed over them)."""
    out: dict[str, float] = collections.defaultdict(float)
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rpartition(")")[2].split()
            except OSError:  # the thread ended
                continue
            out[re.sub(r"[0-9]+$", "#", name)] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _machine_cpu() -> dict[str, float]:
    import psutil

    return psutil.cpu_times()._asdict()


def _in_loop(pid: int, loop: str) -> bool:
    dump = subprocess.run(["py-spy", "dump", "--nonblocking", "--pid", str(pid)], capture_output=True, text=True)
    return f" {loop} (" in dump.stdout and any(f" {n} (" in dump.stdout for n in ("backward", "step", "loss_sum"))


class Profiler(threading.Thread):
    """Waits for the launcher's training processes to reach their loop, then profiles `seconds`."""

    def __init__(self, launcher: str, match: str, workers: int, seconds: float, out_dir: Path):
        super().__init__(daemon=True)
        self.launcher, self.match, self.workers, self.seconds, self.out_dir = launcher, match, workers, seconds, out_dir
        self.result: dict | None = None
        self.error: str | None = None

    def _training_pids(self) -> list[int]:
        import psutil

        # torchrun's own command line names the worker script too: it is not a training process.
        return [p.pid for p in psutil.process_iter(["cmdline"])
                if re.search(self.match, " ".join(p.info["cmdline"] or []))
                and "torch.distributed.run" not in " ".join(p.info["cmdline"] or [])]

    def run(self) -> None:
        try:
            deadline = time.time() + 600
            pids: list[int] = []
            while time.time() < deadline:
                pids = self._training_pids()
                if len(pids) >= self.workers and all(_in_loop(p, LOOP_FRAMES[self.launcher]) for p in pids):
                    break
                time.sleep(0.5)
            else:
                raise TimeoutError(f"{self.launcher}: workers never reached the loop (found {pids})")
            time.sleep(2.0)  # past the first, slower steps
            # Window 1, nothing attached: what every process and thread uses.
            before, threads_before, machine_before = _cpu_times(), _thread_cpu(pids), _machine_cpu()
            started = time.perf_counter()
            time.sleep(self.seconds)
            elapsed = time.perf_counter() - started
            cores = _rates(_cpu_by_label(before, _cpu_times()), elapsed)
            threads_after, machine_after = _thread_cpu(pids), _machine_cpu()
            thread_cores = _rates({k: v - threads_before.get(k, 0.0) for k, v in threads_after.items()}, elapsed)
            machine = {k: round((machine_after[k] - machine_before[k]) / elapsed, 3)
                       for k in ("user", "nice", "system", "idle", "iowait", "steal") if k in machine_after}
            # Window 2: py-spy samples the loop (it costs CPU itself, so it is not in window 1's numbers).
            spies = [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "50", "--idle",
                                       "--nonblocking", "--format", "raw", "--duration", str(int(self.seconds)),
                                       "--output", str(self.out_dir / f"{self.launcher}-{pid}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]
            for spy in spies:
                spy.wait()
            phases: dict[str, int] = collections.Counter()
            loop = LOOP_FRAMES[self.launcher]
            for path in self.out_dir.glob(f"{self.launcher}-*.txt"):
                for line in path.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if f";{loop} (" in f";{stack}":
                        phases[_phase(stack, loop)] += int(count)
            total = sum(phases.values()) or 1
            self.result = {"phases": {k: round(v / total, 3) for k, v in phases.most_common()},
                           "cpu_cores_by_process": cores, "worker_cpu_cores_by_thread": thread_cores,
                           "machine_cpu_cores": machine, "window_s": round(elapsed, 1), "samples": total}
        except Exception as exc:  # reported beside the run, never swallowed
            self.error = repr(exc)


def _profiled(launcher: str, match: str, workers: int, seconds: float, out_dir: Path, fn) -> dict:
    profiler = Profiler(launcher, match, workers, seconds, out_dir)
    profiler.start()
    row = fn()
    profiler.join(timeout=60)
    if profiler.result is None:
        raise RuntimeError(f"profiling {launcher} failed: {profiler.error or 'no result'}")
    return {**row, **profiler.result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deepspeed", default="zero2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rayloom-only", action="store_true", help="skip DeepSpeed direct (to compare Ray settings)")
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("profile_train: py-spy is not on PATH (it is in requirements/*.lock)", file=sys.stderr)
        return 2

    from rayloom.config import ClusterConfig, compose
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray

    s = bench_train.Settings(steps=args.steps, skip=10)
    model_dir = resolve_model_dir(compose("train", [f"model={s.preset}"]).model)
    rows = bench_train._rows(model_dir, s, count=160)
    rows_file = Path(tempfile.mkdtemp(prefix="profile-rows-")) / "rows.json"
    rows_file.write_text(json.dumps(rows))
    out_dir = Path(tempfile.mkdtemp(prefix="profile-train-"))
    root = tempfile.mkdtemp(prefix="profile-train-runs-")
    started = init_ray(ClusterConfig(num_cpus=4))  # idle beside DeepSpeed direct too, as in bench_train
    try:
        ds = None if args.rayloom_only else _profiled("deepspeed direct", r"bench_train\.py --worker ds", args.workers, args.seconds, out_dir,
                       lambda: bench_train._launch("ds", s, args.deepspeed, args.workers, 1, str(rows_file)))
        ray_row = _profiled("rayloom", r"^ray::RayTrainWorker", args.workers, args.seconds, out_dir,
                            lambda: bench_train._rayloom_row("rayloom", s, args.deepspeed, args.workers, rows, root))
    finally:
        if started:
            import ray

            ray.shutdown()
    rows_out = [{"system": f"DeepSpeed direct (torchrun), {args.deepspeed}, {args.workers} workers", **ds}] if ds else []
    rows_out += [{"system": f"rayloom (Ray Train + DeepSpeed), {args.deepspeed}, {args.workers} workers", **ray_row}]
    for row in rows_out:
        row["seconds_per_step_by_phase"] = {k: round(v * row["step_s"], 4) for k, v in row["phases"].items()}
    ratios = {"rayloom / DeepSpeed direct (tokens/s)": ray_row["tokens_per_s"] / ds["tokens_per_s"],
              "rayloom / DeepSpeed direct (median step time)": ray_row["step_s"] / ds["step_s"]} if ds else {}
    result = harness.Result(
        name="profile_train", description=__doc__.splitlines()[0], rows=rows_out, ratios=ratios,
        notes=[f"model {s.preset}, {s.seq_len}-token rows, micro-batch {s.micro_batch_size}, {args.steps} steps, "
               f"{args.workers} worker(s), {args.deepspeed}; py-spy at 50 Hz over {args.seconds:.0f} s of steady "
               "state per launcher, after a window of the same length with nothing attached for the CPU figures; phases are shares of the loop thread's wall-clock samples.",
               "cpu_cores_by_process: CPU-seconds per wall second of every kind of process on the machine over "
               "the same window (2.0 = both cores of this VM)."])
    if ds:  # a rayloom-only run is an experiment, not the recorded profile
        harness.write(result)
    print(harness.to_markdown(result))
    for row in rows_out:
        print(f"\n{row['system']}: step {row['step_s']:.3f} s")
        print("  phases:", ", ".join(f"{k} {v:.0%}" for k, v in row["phases"].items()))
        print("  CPU cores by process:", ", ".join(f"{k} {v:.3f}" for k, v in row["cpu_cores_by_process"].items()))
        print("  worker CPU cores by thread:",
              ", ".join(f"{k} {v:.2f}" for k, v in row["worker_cpu_cores_by_thread"].items()))
        print("  machine CPU cores:", ", ".join(f"{k} {v:.2f}" for k, v in row["machine_cpu_cores"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
