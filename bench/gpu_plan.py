"""GPU rows of the planner validation: predicted device peak vs `torch.cuda.max_memory_allocated`, and
host peak vs RSS, for a ~1.1B Llama (TinyLlama-1.1B's shape, random weights built from config) on one GPU.

Each variant runs rayloom's training path (PEFT wrapping, DeepSpeed config builder with use_gpu=True,
objective, `deepspeed.initialize`) in a fresh process, world size 1, bf16, 3 optimizer steps, and is
compared with the planner's prediction for the same composed config (CUDA context excluded on both
sides: max_memory_allocated does not see it). With one GPU the data-parallel size is 1, so ZeRO stages
differ only by their buffers and by offload; multi-GPU partitioning is validated on CPU (bench_plan.py).
Sized for under 6 minutes on one H100/H200. Writes bench/results/gpu_plan.json and .md.

    python bench/gpu_plan.py               # on a GPU machine
    python bench/gpu_plan.py --dry-run     # CPU, tiny shape: builds every variant's model, config and plan
    python bench/gpu_plan.py --smoke       # CPU, tiny shape: also runs the steps (checks the script)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GiB = 2**30
FULL = {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
        "num_attention_heads": 32, "num_key_value_heads": 4, "seq_len": 2048, "micro_batch": 2}
TINY = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "seq_len": 64, "micro_batch": 2}
COMMON = ["train.num_workers=1", "train.global_batch_size=0", "train.max_steps=3", "train.warmup_steps=0",
          "plan.device_overhead_gb=0", "plan.host_overhead_gb=0", "plan.device_memory_gb=1000",
          "plan.host_memory_gb=1000"]
VARIANTS = {
    "zero2 bf16": ["deepspeed=zero2_bf16"],
    "zero2 bf16 ckpt": ["deepspeed=zero2_bf16", "train.gradient_checkpointing=true"],
    "zero3 bf16": ["deepspeed=zero3", "deepspeed.precision=bf16"],
    "zero3 bf16 offload": ["deepspeed=zero3_bf16_offload"],
    "zero2 bf16 lora": ["deepspeed=zero2_bf16", "peft=lora"],
    "zero2 bf16 dpo lora": ["deepspeed=zero2_bf16", "peft=lora", "data=demo_preference", "objective=dpo"],
}


def overrides(shape: dict, variant: str, config_json: Path, use_gpu: bool) -> list[str]:
    return [f"plan.model_config={config_json}", f"data.seq_len={shape['seq_len']}",
            f"train.micro_batch_size={shape['micro_batch']}", f"train.use_gpu={str(use_gpu).lower()}",
            *COMMON, *VARIANTS[variant]]


def write_config(shape: dict, folder: Path) -> Path:
    config = {k: v for k, v in shape.items() if k not in ("seq_len", "micro_batch")}
    config |= {"model_type": "llama", "tie_word_embeddings": False, "max_position_embeddings": shape["seq_len"]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def build_model(config_json: Path, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**json.loads(config_json.read_text()), use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config)


def variant_main(spec: dict) -> None:
    """One variant in this process: build, 3 steps, write device/host peaks."""
    import resource

    import deepspeed
    import torch
    from bench_plan import random_batch, rss_now

    import rayloom.align  # noqa: F401  registers dpo
    from rayloom.config import compose
    from rayloom.models.peft_wrap import wrap_with_peft
    from rayloom.train.ds_config import build_batch_geometry, build_deepspeed_config
    from rayloom.train.objectives import build_objective
    from rayloom.train.optim import param_groups

    cuda = spec["device"] == "cuda"
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    cfg = compose("train", spec["overrides"])
    host_baseline = rss_now()
    model = build_model(Path(spec["config_json"]), spec["device"])
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.peft.method != "none":
        model = wrap_with_peft(model, cfg.peft)
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed, 1)
    ds_config = build_deepspeed_config(cfg.train, cfg.deepspeed, geometry, use_gpu=cuda)
    objective = build_objective(cfg)
    if objective.attach is not None and cfg.objective.reference == "copy":
        raise SystemExit("gpu_plan: a reference copy loads the model from model.path; use the lora variant")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.0), config=ds_config)
    engine.train()  # from_pretrained returns eval mode; checkpointing only runs in training mode
    batch = {k: v.to(spec["device"]) for k, v in random_batch(objective.columns, geometry.micro_batch_size,
                                                         cfg.data.seq_len, engine.module.config.vocab_size).items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_s = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        loss = objective.loss_sum(engine, batch)
        engine.backward(loss / max(float(objective.count_targets(batch)), 1.0))
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - start)
    Path(spec["out"]).write_text(json.dumps({
        "device_peak": torch.cuda.max_memory_allocated() if cuda else 0,
        "host_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - host_baseline,
        "step_s": step_s}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny: build models, configs and plans only")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny: also run the steps")
    parser.add_argument("--variant-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant_spec:
        variant_main(json.loads(args.variant_spec))
        return 0
    from rayloom.config import compose
    from rayloom.planner import plan_run

    tiny = args.dry_run or args.smoke
    shape, device = (TINY, "cpu") if tiny else (FULL, "cuda")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rayloom-gpu-plan-") as tmp:
        config_json = write_config(shape, Path(tmp))
        full_json = write_config(FULL, Path(tmp) / "full")  # the dry run also plans the full-size rows
        for variant in VARIANTS:
            cfg = compose("train", overrides(shape, variant, config_json, use_gpu=not tiny))
            plan = plan_run(cfg, flops=0.0)
            row = {"system": variant, "predicted_device_gib": plan.breakdown.device_peak / GiB,
                   "predicted_host_gib": plan.breakdown.host_peak / GiB}
            if args.dry_run:
                build_model(config_json, "cpu")
                full = plan_run(compose("train", overrides(FULL, variant, full_json, use_gpu=True)), flops=0.0)
                print(f"built {variant}: full-size plan {full.breakdown.device_peak / GiB:.1f} GiB device, "
                      f"{full.breakdown.host_peak / GiB:.1f} GiB host", flush=True)
                rows.append(row)
                continue
            out = Path(tmp) / f"{len(rows)}.json"
            spec = {"overrides": overrides(shape, variant, config_json, use_gpu=not tiny), "device": device,
                    "config_json": str(config_json), "out": str(out), "steps": 3}
            env = {**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(29700 + len(rows))}
            proc = subprocess.run([sys.executable, __file__, "--variant-spec", json.dumps(spec)], env=env,
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode or not out.is_file():
                row["error"] = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
                rows.append(row)
                continue
            got = json.loads(out.read_text())
            row |= {"measured_device_gib": got["device_peak"] / GiB, "measured_host_gib": got["host_peak"] / GiB,
                    "step_s": got["step_s"][-1]}
            if got["device_peak"]:
                row["device predicted/measured"] = plan.breakdown.device_peak / got["device_peak"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.dry_run:
        return 0
    from harness import Result, to_markdown, write

    ratios = {}
    judged = [r["device predicted/measured"] for r in rows if "device predicted/measured" in r]
    if judged:
        ratios["worst device predicted/measured"] = max(judged, key=lambda v: abs(v - 1))
    result = Result(name="gpu_plan_smoke" if tiny else "gpu_plan",
                    description="planner on one GPU: predicted device peak vs torch.cuda.max_memory_allocated",
                    rows=rows, ratios=ratios, goals={"worst device predicted/measured": "<= 1.2"} if judged else {},
                    notes=["World size 1: ZeRO partitioning is not exercised here (see bench_plan.py on CPU)."])
    if not tiny:
        write(result)
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
