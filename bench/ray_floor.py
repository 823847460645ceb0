"""What one idle Ray process beside a run costs its training throughput.

`python bench/ray_floor.py [--actors 12] [--repeats 3] [--deepspeed zero3_offload]`

Every Ray worker process wakes every 10 ms (Ray's signal check in `CoreWorker::RunTaskExecutionLoop`,
a fixed interval), so each actor beside a run takes CPU from training workers that need every core
of a small machine. This measures that cost without rayloom in the way: DeepSpeed launched
directly (bench_train.py's `ds` launcher: the same model, rows and DeepSpeed config as the train
bench, 2 workers under torchrun) with the embedded Ray idling beside it, alternating runs with
`--actors` idle `num_cpus=0` actors started and without them. It reports, it asserts nothing;
written as bench/results/ray_floor.json + .md. docs/training.md ("Where a step's time goes") uses
it to weigh the processes Ray Train and Ray Data start beside a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_train
import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deepspeed", default="zero3_offload")
    args = parser.parse_args(argv)

    import ray

    from rayloom.config import ClusterConfig, compose
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray

    s = bench_train.Settings()
    model_dir = resolve_model_dir(compose("train", [f"model={s.preset}"]).model)
    rows_file = Path(tempfile.mkdtemp(prefix="ray-floor-rows-")) / "rows.json"
    rows_file.write_text(json.dumps(bench_train._rows(model_dir, s, count=160)))
    started = init_ray(ClusterConfig(num_cpus=4))

    @ray.remote(num_cpus=0)
    class Idle:
        def ready(self) -> bool:
            return True

    runs: dict[int, list[float]] = {0: [], args.actors: []}
    try:
        for _ in range(args.repeats):
            for count in runs:  # alternate, so a drift of the shared machine hits both sides alike
                actors = [Idle.remote() for _ in range(count)]
                ray.get([a.ready.remote() for a in actors])
                runs[count].append(bench_train._launch("ds", s, args.deepspeed, 2, 1, str(rows_file))["tokens_per_s"])
                for actor in actors:
                    ray.kill(actor)
                time.sleep(2.0)
    finally:
        if started:
            ray.shutdown()
    rows = [{"system": f"DeepSpeed direct (torchrun), {args.deepspeed}, 2 workers, {count} idle Ray actors beside it",
             "idle_actors": count, "tokens_per_s": max(tps), "median_tokens_per_s": statistics.median(tps),
             "runs_tokens_per_s": [round(x, 1) for x in tps]} for count, tps in runs.items()]
    best = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    median = rows[1]["median_tokens_per_s"] / rows[0]["median_tokens_per_s"]
    result = harness.Result(
        name="ray_floor", description=__doc__.splitlines()[0], rows=rows,
        ratios={f"tokens/s with {args.actors} idle actors / with none (best of {args.repeats})": best,
                f"the same, medians of {args.repeats}": median,
                "cost of one idle actor, from the medians (fraction of tokens/s)": (1 - median) / args.actors,
                "cost of one idle actor, from the bests (fraction of tokens/s)": (1 - best) / args.actors},
        notes=[f"model {s.preset}, {s.seq_len}-token rows, micro-batch {s.micro_batch_size}, {s.steps} steps "
               f"(first {s.skip} not timed), {args.deepspeed}, 2 workers with 1 thread each, as bench_train.py.",
               "the embedded Ray (4 logical CPUs) idles beside every run; the actors are started and ready "
               "before the launch and killed after it."])
    harness.write(result)
    print(harness.to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
