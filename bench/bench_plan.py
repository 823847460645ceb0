"""Planner validation on CPU: predicted vs measured peak memory per training worker, beside DeepSpeed's
own model-state estimators, for ZeRO 0-3, offload, activation checkpointing, LoRA, DPO and two sequence
lengths.

Each configuration runs rayloom's training path without Ray (the same model loading, PEFT wrapping,
DeepSpeed config builder, objective and `deepspeed.initialize`) in 2 fresh processes (data-parallel
ranks over gloo, so ZeRO partitioning is real), 2 optimizer steps on random tokens. Measured: rank 0's
RSS high-water mark (VmHWM, reset through /proc/self/clear_refs) during the configuration minus its RSS
just before it. Before that the process runs the same code path once on a minimal model (1 layer, width
64), so imports, thread pools and kernel workspaces are in the baseline, not in the measurement.
Predicted: the planner's per-worker device + host peak for the same composed config, without its
runtime-baseline term.

What a CPU RSS measurement can and cannot show: it is the OS's view of touched pages, not an allocator's
view of tensors. Freed memory that glibc keeps counts (the benchmark sets MALLOC_MMAP_THRESHOLD_ so large
tensors are unmapped when freed); allocated-but-untouched pages do not (DeepSpeed's 50M-element reduce
bucket shows only as far as gradients are written into it, which the planner models for CPU runs). On
CPU device and host are the same RAM, so offload moves memory between terms without changing the total:
these rows validate the sum, not the device/host split. GPU rows (torch.cuda.max_memory_allocated, the
split included) come from bench/gpu_plan.py on a GPU machine.

Speed: each row runs 1 warm-up step and TIMED_STEPS timed steps after the memory baseline; tokens_per_s
is rank 0's tokens per step over the median timed step, beside the planner's step-time prediction for one
worker. The speed check ranks the rows of one shape (SPEED_ROWS) by the planner's predicted tokens/s (as
`plan.search` ranks configurations) and compares the measured speed of its top pick with the fastest.

    python bench/run.py plan            # full (~9 minutes on 2 cores)
    python bench/run.py plan --quick    # 3 small rows
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Result  # noqa: E402

DESCRIPTION = "planner: predicted vs measured peak memory per worker (CPU RSS, 2 ranks) and DeepSpeed's estimators"
MiB = 2**20
# A Llama built from config, big enough that each term shows above the measurement's noise (~21M params).
MODEL = ["model=tiny", "model.name=plan-bench", "model.vocab_size=8192", "model.hidden_size=512",
         "model.intermediate_size=1376", "model.num_layers=4", "model.num_heads=8", "model.num_kv_heads=8",
         "model.max_position_embeddings=1024"]
QUICK_MODEL = ["model=tiny", "model.name=plan-bench-quick", "model.num_layers=2"]
COMMON = ["train.num_workers=2", "train.micro_batch_size=2", "train.global_batch_size=0", "train.cpus_per_worker=1",
          "plan.host_overhead_gb=0", "train.max_steps=2", "train.warmup_steps=0"]
ROWS = {
    "zero0": ["deepspeed=zero0", "data.seq_len=256"],
    "zero1": ["deepspeed=zero1", "data.seq_len=256"],
    "zero2": ["deepspeed=zero2", "data.seq_len=256"],
    "zero3": ["deepspeed=zero3", "data.seq_len=256"],
    "zero2 offload opt": ["deepspeed=zero2_offload", "data.seq_len=256"],
    "zero3 offload opt+param": ["deepspeed=zero3_offload", "data.seq_len=256"],
    "zero2 bf16": ["deepspeed=zero2_bf16", "data.seq_len=256"],
    "zero2 seq1024": ["deepspeed=zero2", "data.seq_len=1024"],
    "zero2 seq1024 ckpt": ["deepspeed=zero2", "data.seq_len=1024", "train.gradient_checkpointing=true"],
    "zero2 lora seq1024": ["deepspeed=zero2", "data.seq_len=1024", "peft=lora"],
    "zero2 dpo ref copy": ["deepspeed=zero2", "data.seq_len=256", "data=demo_preference", "objective=dpo",
                           "objective.reference=copy"],
    "zero2 dpo lora": ["deepspeed=zero2", "data.seq_len=256", "data=demo_preference", "objective=dpo", "peft=lora"],
}
QUICK_ROWS = ("zero0", "zero2", "zero2 lora seq1024")
# Steps timed per row after one warm-up step (their median is the row's step time).
TIMED_STEPS = 3
# Rows of one shape whose measured speed judges the planner's pick (same tokens per step).
SPEED_ROWS = ("zero0", "zero1", "zero2", "zero3", "zero2 offload opt", "zero3 offload opt+param")


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def random_batch(columns: tuple[str, ...], rows: int, seq_len: int, vocab: int):
    import torch

    batch = {}
    ids = torch.randint(4, vocab, (rows, seq_len))
    for column in columns:
        if column.endswith("input_ids"):
            batch[column] = ids.clone()
        elif column.endswith("labels"):
            labels = ids.clone()
            labels[:, : seq_len // 2] = -100  # a prompt half without targets, as SFT/preference shards have
            batch[column] = labels
        elif column.endswith("attention_mask"):
            batch[column] = torch.ones(rows, seq_len, dtype=torch.long)
        elif column == "position_ids":
            batch[column] = torch.arange(seq_len).repeat(rows, 1)
    return batch


def rss_hwm() -> int:
    """Peak RSS since the last reset_hwm() (VmHWM; ru_maxrss cannot be reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS to the current RSS


def _train_steps(cfg, model_dir: str, steps: int, attach: bool) -> dict:
    """rayloom's worker set-up (as train_fn: model, checkpointing, PEFT, DeepSpeed, objective), then steps."""
    import deepspeed

    from rayloom.models import load_model
    from rayloom.models.peft_wrap import wrap_with_peft
    from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config
    from rayloom.train.objectives import build_objective
    from rayloom.train.optim import param_groups

    model = load_model(model_dir, cfg.model.dtype)
    model.config.use_cache = False
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.peft.method != "none":
        model = wrap_with_peft(model, cfg.peft)
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed, 2)
    ds_config = build_deepspeed_config(cfg.train, cfg.deepspeed, geometry, use_gpu=False)
    objective = build_objective(cfg)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.0), config=ds_config)
    engine.train()  # from_pretrained returns eval mode; checkpointing only runs in training mode
    if attach and objective.attach is not None:
        objective.attach(engine, ds_config)
    batch = random_batch(objective.columns, cfg.train.micro_batch_size, cfg.data.seq_len,
                         engine.module.config.vocab_size)
    step_s = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = objective.loss_sum(engine, batch)
        engine.backward(loss / max(float(objective.count_targets(batch)), 1.0))
        engine.step()
        step_s.append(time.perf_counter() - start)
    tokens = cfg.train.micro_batch_size * cfg.data.seq_len * (2 if "chosen_input_ids" in objective.columns else 1)
    if hasattr(engine, "destroy"):
        engine.destroy()
    return {"step_s": step_s, "tokens_per_step": tokens}


def worker_main(spec: dict) -> None:
    """One data-parallel rank: a warm-up of the same code path on a minimal model (imports, thread pools,
    kernel workspaces: the baseline), then the configuration itself; writes its measurements."""
    import gc
    import resource

    import deepspeed
    import torch

    import rayloom.align  # noqa: F401  registers dpo
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    # The parent composed the config (one typed object, as Ray Train workers receive it).
    cfg = pickle.loads(Path(spec["config_pickle"]).read_bytes())
    torch.manual_seed(0)
    _train_steps(cfg, spec["warmup_model_dir"], 1, attach=False)
    gc.collect()
    baseline = rss_now()
    reset_hwm()
    got = _train_steps(cfg, spec["model_dir"], 1 + TIMED_STEPS, attach=True)
    Path(spec["out"]).write_text(json.dumps({
        "baseline": baseline, "peak": rss_hwm(),
        "process_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, **got}))


def _warmup_model(folder: Path) -> str:
    """A minimal Llama (1 layer, width 64, vocab 512) saved as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


def _measure(name: str, cfg, model_dir: str, warmup_dir: str, tmp: Path) -> dict:
    port = 29500 + (abs(hash(name)) % 1000)
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           # Large tensors are mmapped and given back when freed, so RSS follows live tensors.
           "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    procs, outs = [], []
    for rank in range(2):
        out = tmp / f"{abs(hash(name))}-{rank}.json"
        config_pickle = tmp / f"{abs(hash(name))}.pkl"
        config_pickle.write_bytes(pickle.dumps(cfg))
        spec = {"config_pickle": str(config_pickle), "model_dir": model_dir, "warmup_model_dir": warmup_dir,
                "out": str(out)}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                      env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs.append(out)
    logs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs) or not outs[0].is_file():
        tail = "\n".join(logs[0].splitlines()[-15:])
        return {"error": f"rank 0 exit {procs[0].returncode}: {tail}"}
    return json.loads(outs[0].read_text())


def _deepspeed_estimate(setup, shape, trainable: int) -> float:
    """DeepSpeed's model-state estimator for this row, per process (its CPU figure is per node: / 2)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total = shape.num_params + (trainable if setup.peft_method != "none" else 0)
    offload = setup.offload_optimizer != "none"
    if setup.zero_stage == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total, shape.largest_layer_params, 2, 1, offload,
                                                            setup.offload_param != "none", zero_init=False)
    else:  # DeepSpeed has no estimator for stages 0/1; its ZeRO-2 one is the nearest
        cpu, gpu = estimate_zero2_model_states_mem_needs(total, 2, 1, offload)
    return gpu + (cpu / 2 if offload else 0)


def run(quick: bool = False) -> Result:
    from rayloom.config import compose
    from rayloom.models import resolve_model_dir
    from rayloom.planner import plan_run
    from rayloom.planner.memory import trainable_params
    from rayloom.planner.search import Candidate

    model = QUICK_MODEL if quick else MODEL
    names = QUICK_ROWS if quick else tuple(ROWS)
    model_dir = str(resolve_model_dir(compose("train", model).model))
    configs = {name: compose("train", [*model, *COMMON, *ROWS[name]]) for name in names}
    rows, errors, measured_speed, plans = [], [], {}, {}
    with tempfile.TemporaryDirectory(prefix="rayloom-bench-plan-") as tmp:
        warmup_dir = _warmup_model(Path(tmp) / "warmup-model")
        for name in names:
            cfg = configs[name]
            plan = plan_run(cfg)  # as `rayloom plan train` plans: this machine's measured FLOP/s and bandwidth
            plans[name] = plan
            predicted = plan.breakdown.total_peak
            ds_estimate = _deepspeed_estimate(plan.setup, plan.shape, trainable_params(plan.shape, plan.setup))
            got = _measure(name, configs[name], model_dir, warmup_dir, Path(tmp))
            if "error" in got:
                errors.append(f"{name}: {got['error']}")
                rows.append({"system": name, "predicted_mib": predicted / MiB, "measured_mib": "failed"})
                continue
            measured = got["peak"] - got["baseline"]
            terms = {t.name: t.device + t.host for t in plan.breakdown.terms}
            rows.append({
                "system": name,
                "predicted_mib": predicted / MiB,
                "measured_mib": measured / MiB,
                "predicted/measured": predicted / measured,
                "deepspeed_estimate_mib": ds_estimate / MiB,
                "deepspeed/measured": ds_estimate / measured,
                "activations_mib": terms.get("activations", 0.0) / MiB,
                "logits_mib": terms.get("logits and loss buffers", 0.0) / MiB,
                "baseline_rss_mib": got["baseline"] / MiB,
                "tokens_per_s": got["tokens_per_step"] / statistics.median(got["step_s"][1:]),
                "predicted_tokens_per_s": plan.throughput.tokens_per_s_per_worker,
                "step_s_spread": (max(got["step_s"][1:]) - min(got["step_s"][1:])) / statistics.median(got["step_s"][1:]),
            })
            measured_speed[name] = rows[-1]["tokens_per_s"]
    judged = [r for r in rows if isinstance(r.get("predicted/measured"), float)]
    ratios, goals = {}, {}
    if judged:
        worst = max(judged, key=lambda r: abs(r["predicted/measured"] - 1))
        ratios["worst deviation of predicted/measured from 1 (peak memory)"] = abs(worst["predicted/measured"] - 1)
        goals["worst deviation of predicted/measured from 1 (peak memory)"] = "<= 0.2"
        ratios["rows within ±20%"] = sum(abs(r["predicted/measured"] - 1) <= 0.2 for r in judged) / len(judged)
        goals["rows within ±20%"] = ">= 1.0"
        ratios["median DeepSpeed estimate/measured"] = sorted(r["deepspeed/measured"] for r in judged)[len(judged) // 2]
    notes = [f"Model: {plans[names[0]].shape.num_params / 1e6:.1f}M-parameter Llama built from config "
             f"({' '.join(model[1:])}); 2 ranks over gloo, micro-batch 2, "
             f"{1 + TIMED_STEPS} steps; measured = rank 0's peak RSS "
             "during the configuration - its RSS before it, after a warm-up of the same code path on a 1-layer "
             "model (baseline_rss_mib: Python, torch, DeepSpeed, gloo and the warm-up's leftovers).",
             "DeepSpeed's estimators count model states only and assume 16-bit mixed precision (2+18 bytes per "
             "parameter) with a 1.5 buffer factor on the CPU side; they are below the measurement where activations "
             "and logits matter and do not know about frozen (LoRA) weights.",
             "On CPU, device and host are one RAM: offload rows validate the total, not the split.",
             "Known misses inside the ±20%: the offload rows are under-predicted by 17-20% (DeepSpeed's CPU-offload "
             "path holds about one more gradient-sized buffer than the model itemizes); activation checkpointing is "
             "over-predicted by ~18% (the recomputed layer's activations are not all alive at once).",
             f"tokens_per_s: rank 0's tokens per step / the median of {TIMED_STEPS} timed steps after a warm-up step "
             "(step_s_spread: (max - min) / median of those steps); predicted_tokens_per_s: the planner's step-time "
             "model for one worker (compute + optimizer + collectives + offload copies, rates from "
             "rayloom.planner.hardware's CPU row and this machine's measured FLOP/s and copy bandwidth)."]
    speed = [n for n in SPEED_ROWS if n in measured_speed]
    if len(speed) >= 2:
        capacity_plan = plans[speed[0]]
        ranked = sorted((Candidate(plans[n]) for n in speed), key=lambda c: -c.plan.throughput.tokens_per_s)
        pick = next(n for n in speed if plans[n] is ranked[0].plan)
        fastest = max(speed, key=measured_speed.get)
        ratios["planner's pick / fastest measured (tokens/s)"] = measured_speed[pick] / measured_speed[fastest]
        goals["planner's pick / fastest measured (tokens/s)"] = ">= 0.9"
        order = ", ".join(f"{n} {measured_speed[n]:.0f} ({plans[n].throughput.tokens_per_s_per_worker:.0f})"
                          for n in sorted(speed, key=measured_speed.get, reverse=True))
        notes.append(f"Speed check among {', '.join(speed)} (all fit {capacity_plan.capacity.host_bytes / 2**30:.0f} "
                     f"GiB): planner picks '{pick}', fastest measured '{fastest}'. Measured tokens/s per rank, fastest "
                     f"first (predicted in brackets): {order}.")
    notes += errors
    return Result(name="plan", description=DESCRIPTION, rows=rows, ratios=ratios, goals=goals, notes=notes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(json.loads(sys.argv[2]))
    else:
        sys.exit("run through bench/run.py: python bench/run.py plan [--quick]")
