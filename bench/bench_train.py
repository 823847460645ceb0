"""Training throughput and MFU, side by side on the same tiny model, batch and machine:

* rayloom: Ray Train + DeepSpeed (ZeRO-2 on 1 and 2 workers; ZeRO-3 with and without CPU offload)
* DeepSpeed launched directly without Ray (torchrun, the same DeepSpeed config, model and rows)
* a plain single-process PyTorch loop (torch AdamW, the same global batch)

Throughput is steady state: the first `skip` steps (warm-up, first data reads) are left out and the
rest are timed per step, the same way in every system. Start-up is the time from launching a
system (trainer.fit / the subprocess) to its first step, with Ray itself already running.

Run: `python bench/run.py train` (or `--quick`). This file is also the per-rank script of the
DeepSpeed-direct and plain-PyTorch rows (`python -m torch.distributed.run ... bench/bench_train.py
--worker ...`).
"""


import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DESCRIPTION = "training tokens/s + MFU: rayloom (Ray Train + DeepSpeed) vs DeepSpeed direct vs plain PyTorch"


@dataclass
class Settings:
    preset: str = "tiny"
    seq_len: int = 256
    micro_batch_size: int = 4
    steps: int = 30
    skip: int = 5
    lr: float = 1e-3


def _settings(quick: bool) -> Settings:
    if quick:
        return Settings(preset="tiny-2l", seq_len=64, micro_batch_size=2, steps=12, skip=3)
    return Settings()


def _overrides(s: Settings, deepspeed: str, workers: int, root: str) -> list[str]:
    return [f"model={s.preset}", f"deepspeed={deepspeed}", f"train.num_workers={workers}",
            f"train.micro_batch_size={s.micro_batch_size}", f"train.max_steps={s.steps}",
            f"train.checkpoint_every={s.steps}", "train.warmup_steps=0", f"train.lr={s.lr}", f"data.seq_len={s.seq_len}",
            f"storage.root={root}", "train.export=false", "tracking.progress_bar=false", "train.eval_batches=0",
            "train.on_existing=overwrite", "tracking.report_interval_s=5"]


def _rows(model_dir: Path, s: Settings, count: int) -> list[dict]:
    """Packed rows (the shard contract) from the offline corpus: documents back to back, position
    ids restarting per document, the first label of each document ignored."""
    from transformers import AutoTokenizer

    from rayloom.models.tokenizer_kit import offline_corpus

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows: list[dict] = []
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for text in offline_corpus():
        for para in text.split("\n\n"):
            doc = tok(para.strip())["input_ids"][: s.seq_len]
            if len(doc) < 8:
                continue
            if len(ids) + len(doc) > s.seq_len:
                pad = s.seq_len - len(ids)
                rows.append({"input_ids": ids + [tok.pad_token_id] * pad, "labels": labels + [-100] * pad,
                             "position_ids": pos + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad})
                ids, labels, pos = [], [], []
                if len(rows) == count:
                    return rows
            ids += doc
            labels += [-100] + doc[1:]
            pos += list(range(len(doc)))
    return rows


def _steady(step_times: list[float], tokens: list[float]) -> float:
    """Tokens per step over the median step time (robust to a step slowed by other load)."""
    return statistics.mean(tokens) / statistics.median(step_times)


# --- rayloom rows -------------------------------------------------------------------------------

def _rayloom_row(name: str, s: Settings, deepspeed: str, workers: int, rows: list[dict], root: str) -> dict:
    import ray

    from rayloom.config import compose
    from rayloom.train import train

    cfg = compose("train", _overrides(s, deepspeed, workers, root) + [f"train.run_name=bench-{deepspeed}-{workers}"])
    start = time.perf_counter()
    # 8 blocks, as Parquet shards would give; from_items alone makes one block per row.
    result = train(cfg, datasets={"train": ray.data.from_items(rows, override_num_blocks=8)})
    wall = time.perf_counter() - start
    measured = [h for h in result.history if h["step"] > s.skip]
    tps = _steady([h["step_time_s"] for h in measured], [h["tokens_per_s"] * h["step_time_s"] for h in measured])
    return {"system": name, "workers": workers, "deepspeed": deepspeed, "tokens_per_s": tps,
            "mfu": statistics.median(h["mfu"] for h in measured),
            "step_s": statistics.median(h["step_time_s"] for h in measured),
            "startup_s": result.startup_s, "wall_s": wall, "final_loss": result.history[-1]["loss"]}


# --- subprocess rows (DeepSpeed direct, plain PyTorch) ----------------------------------------------

def _launch(mode: str, s: Settings, deepspeed: str, procs: int, threads: int, rows_file: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-train-")) / "result.json"
    args = ["--worker", mode, "--settings", json.dumps(asdict(s)), "--deepspeed", deepspeed, "--threads",
            str(threads), "--rows", rows_file, "--out", str(out)]
    if mode == "ds":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port=29611",
               str(HERE / "bench_train.py"), *args]
    else:
        cmd = [sys.executable, str(HERE / "bench_train.py"), *args]
    env = {**os.environ, "BENCH_LAUNCHED_AT": str(time.time()), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _worker_main(argv: list[str]) -> None:
    """One rank of the DeepSpeed-direct run, or the plain PyTorch process."""
    parser = argparse.ArgumentParser()
    for flag in ("--worker", "--settings", "--deepspeed", "--threads", "--rows", "--out"):
        parser.add_argument(flag)
    args = parser.parse_args(argv)
    launched = float(os.environ["BENCH_LAUNCHED_AT"])
    s = Settings(**json.loads(args.settings))

    import torch

    from rayloom.config import compose
    from rayloom.models import load_model, resolve_model_dir
    from rayloom.models.peft_wrap import count_parameters
    from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config
    from rayloom.train.metrics import flops_per_token, measure_peak_flops, mfu
    from rayloom.train.objectives import build_objective

    torch.set_num_threads(int(args.threads))
    torch.manual_seed(0)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cfg = compose("train", _overrides(s, args.deepspeed, world, "/tmp/unused"))
    model_dir = resolve_model_dir(cfg.model)
    model = load_model(model_dir)
    model.config.use_cache = False
    objective = build_objective(cfg)
    rows = json.loads(Path(args.rows).read_text())
    num_params, num_trainable = count_parameters(model)
    fpt = flops_per_token(num_params, num_trainable, model.get_input_embeddings().weight.numel(),
                          model.config.num_hidden_layers, model.config.hidden_size, s.seq_len)
    peak = measure_peak_flops("float32")

    if args.worker == "ds":
        import deepspeed
        import torch.distributed as dist

        from rayloom.train.optim import build_lr_scheduler, param_groups

        geometry = build_batch_geometry(cfg.train, cfg.deepspeed, world)
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.0),
                                               config=build_deepspeed_config(cfg.train, cfg.deepspeed, geometry),
                                               lr_scheduler=lambda opt: build_lr_scheduler(opt, cfg.train))
        mine = rows[rank::world]
        batch = s.micro_batch_size
    else:
        engine = model
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.95))
        mine = rows
        batch = s.micro_batch_size * 2  # the 2-worker global batch, in one process
    step_times, tokens, first_step_at = [], [], None
    for step in range(s.steps):
        start = time.perf_counter()
        if first_step_at is None:
            first_step_at = time.time()
        chunk = [mine[(step * batch + i) % len(mine)] for i in range(batch)]
        mb = {k: torch.tensor([r[k] for r in chunk]) for k in chunk[0]}
        if args.worker == "ds":
            local = torch.tensor([float(objective.count_targets(mb)), float(objective.count_tokens(mb))],
                                 dtype=torch.float64)
            dist.all_reduce(local)
            loss_sum = objective.loss_sum(engine, mb)
            engine.backward(loss_sum * world / max(float(local[0]), 1.0))
            engine.step()
            step_tokens = float(local[1])
            total = loss_sum.detach().clone()
            dist.all_reduce(total)
            loss = total / max(float(local[0]), 1.0)
        else:
            loss = objective.loss_sum(engine, mb) / max(float(objective.count_targets(mb)), 1.0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = float(objective.count_tokens(mb))
        elapsed = time.perf_counter() - start
        if step >= s.skip:
            step_times.append(elapsed)
            tokens.append(step_tokens)
    if rank == 0:
        positions_per_s = batch * world * s.seq_len / statistics.median(step_times)
        Path(args.out).write_text(json.dumps({
            "tokens_per_s": _steady(step_times, tokens), "step_s": statistics.median(step_times),
            "mfu": mfu(fpt, positions_per_s / world, peak), "startup_s": first_step_at - launched,
            "final_loss": float(loss.detach()),
        }))


# --- the benchmark --------------------------------------------------------------------------------

def _best(rows: list[dict]) -> dict:
    """The repetition with the highest throughput: other load on a shared machine only slows runs down."""
    return max(rows, key=lambda r: r["tokens_per_s"])


def run(quick: bool = False):
    from harness import Result

    from rayloom.config import ClusterConfig, compose
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray

    s = _settings(quick)
    model_dir = resolve_model_dir(compose("train", [f"model={s.preset}"]).model)
    rows = _rows(model_dir, s, count=64 if quick else 160)
    rows_file = Path(tempfile.mkdtemp(prefix="bench-rows-")) / "rows.json"
    rows_file.write_text(json.dumps(rows))
    root = tempfile.mkdtemp(prefix="bench-train-runs-")
    # Single runs on this shared 2-core VM move by 5-10%: the headline rows keep the best of 3.
    rounds = 1 if quick else 3

    def ds_row(procs: int, deepspeed: str) -> dict:
        return {"system": f"DeepSpeed direct (torchrun), {deepspeed}", "workers": procs, "deepspeed": deepspeed,
                **_launch("ds", s, deepspeed, procs, 1, str(rows_file))}

    def ray_row(workers: int, deepspeed: str) -> dict:
        return _rayloom_row(f"rayloom (Ray Train + DeepSpeed), {deepspeed}", s, deepspeed, workers, rows, root)

    # Ray runs (idle) during the baselines too, so every system sees the same machine.
    started = init_ray(ClusterConfig(num_cpus=4))
    out: list[dict] = []
    try:
        # The headline pairs alternate and keep their best repetition (the machine may be shared).
        for workers in (1, 2):
            tries_ds, tries_ray = [], []
            for _ in range(rounds):
                tries_ds.append(ds_row(workers, "zero2"))
                tries_ray.append(ray_row(workers, "zero2"))
            out += [{**_best(tries_ds), "repeats": rounds}, {**_best(tries_ray), "repeats": rounds}]
        # The ZeRO-3 + offload pair is judged by a goal too (issue #23): it alternates the same way.
        tries_ds, tries_ray = [], []
        for _ in range(rounds):
            tries_ds.append(ds_row(2, "zero3_offload"))
            tries_ray.append(ray_row(2, "zero3_offload"))
        out += [{**_best(tries_ds), "repeats": rounds}, {**_best(tries_ray), "repeats": rounds}]
        out.append(ray_row(2, "zero3"))
        for threads in (1, 2):
            # The 2-thread row is a goal's baseline: it keeps its best repetition too.
            tries = [_launch("torch", s, "zero0", 1, threads, str(rows_file)) for _ in range(rounds if threads == 2 else 1)]
            out.append({"system": f"plain PyTorch, {threads} thread(s)", "workers": 1, "deepspeed": "-",
                        **_best(tries), **({"repeats": rounds} if threads == 2 else {})})
    finally:
        if started:
            import ray

            ray.shutdown()

    def find(system_prefix: str, workers: int, deepspeed: str) -> dict:
        return next(r for r in out if r["system"].startswith(system_prefix) and r["workers"] == workers
                    and r["deepspeed"] == deepspeed)

    ray2, ds2 = find("rayloom", 2, "zero2"), find("DeepSpeed direct", 2, "zero2")
    ray1, ds1 = find("rayloom", 1, "zero2"), find("DeepSpeed direct", 1, "zero2")
    ray3, ray3o = find("rayloom", 2, "zero3"), find("rayloom", 2, "zero3_offload")
    ds3o = find("DeepSpeed direct", 2, "zero3_offload")
    plain = find("plain PyTorch, 2", 1, "-")
    ratios = {
        "rayloom / DeepSpeed direct, ZeRO-2, 1 worker (tokens/s)": ray1["tokens_per_s"] / ds1["tokens_per_s"],
        "rayloom / DeepSpeed direct, ZeRO-2, 2 workers (tokens/s)": ray2["tokens_per_s"] / ds2["tokens_per_s"],
        "rayloom / DeepSpeed direct, ZeRO-3 + offload, 2 workers (tokens/s)":
            ray3o["tokens_per_s"] / ds3o["tokens_per_s"],
        "rayloom ZeRO-2 2 workers / plain PyTorch 2 threads (tokens/s)": ray2["tokens_per_s"] / plain["tokens_per_s"],
        "offload cost: ZeRO-3 + CPU offload / ZeRO-3, rayloom 2 workers (tokens/s)":
            ray3o["tokens_per_s"] / ray3["tokens_per_s"],
        "ZeRO-2 scaling: 2 workers / 1 worker, rayloom (tokens/s)": ray2["tokens_per_s"] / ray1["tokens_per_s"],
        "start-up overhead: rayloom - DeepSpeed direct, ZeRO-2 2 workers (seconds)":
            ray2["startup_s"] - ds2["startup_s"],
    }
    # Issue #23's goals.
    goals = {"rayloom / DeepSpeed direct, ZeRO-2, 1 worker (tokens/s)": ">= 0.95",
             "rayloom / DeepSpeed direct, ZeRO-2, 2 workers (tokens/s)": ">= 0.95",
             "rayloom / DeepSpeed direct, ZeRO-3 + offload, 2 workers (tokens/s)": ">= 0.95",
             "rayloom ZeRO-2 2 workers / plain PyTorch 2 threads (tokens/s)": ">= 0.9"}
    notes = [
        f"model {s.preset}, {s.seq_len}-token packed rows, micro-batch {s.micro_batch_size} per worker, "
        f"{s.steps} steps (first {s.skip} not timed; throughput = tokens per step / median step time), fp32, "
        "1 thread per worker; plain PyTorch uses the 2-worker global batch in one process.",
        "DeepSpeed direct runs the same rayloom DeepSpeed config, model, rows and loss normalisation under torchrun "
        "(what the deepspeed launcher does on one node), without Ray; Ray idles beside it so both see the same machine.",
        "rayloom's data arrive through Ray Data (get_dataset_shard -> iter_torch_batches, 8 blocks, like Parquet "
        "shards); its step time includes waiting for data.",
        "tokens/s counts non-padding tokens; MFU is against a matmul peak measured in each process (same dtype and "
        "threads as training), so it is comparable across rows, not to vendor peaks.",
        "start-up: rayloom = trainer.fit() to first step with Ray already running (controller, worker actors, "
        "imports, model, DeepSpeed init, data); DeepSpeed direct = process launch to first step.",
        f"the ZeRO-2 pairs and the ZeRO-3 + offload pair alternate and keep the best of {rounds} repetition(s), as "
        "does plain PyTorch with 2 threads: this 2-core machine is shared, and Ray's own processes (about 13 "
        "beside a run, each waking every 10 ms) need CPU beside 2 busy workers.",
    ]
    return Result(name="train", description=DESCRIPTION, rows=out, ratios=ratios, goals=goals, notes=notes)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
