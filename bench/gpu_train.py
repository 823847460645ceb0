"""GPU variant of the training benchmark: a ~1.1B Llama (TinyLlama-1.1B's shape) built from config with
random weights, on one GPU, side by side in one run:

* plain PyTorch (bf16 autocast, fused AdamW)
* DeepSpeed ZeRO-2 bf16, ZeRO-3 bf16, ZeRO-3 bf16 + CPU optimizer/parameter offload
* LoRA (peft, r=16 on all projections) under DeepSpeed ZeRO-2 bf16
* optionally (`--rayloom`, needs ray + rayloom) rayloom's Ray Train + DeepSpeed ZeRO-2 path on 1 GPU worker

Needs only torch, transformers, peft and deepspeed (plus this folder's stdlib-only harness.py). Each
variant runs in a fresh subprocess so GPU memory starts clean. Sized to finish in under 8 minutes on
one H200 (about 4 minutes without --rayloom). Writes bench/results/gpu_train.json and .md.

    python bench/gpu_train.py                 # on a GPU machine
    python bench/gpu_train.py --smoke         # tiny shapes on CPU: checks the script itself
    python bench/gpu_train.py --dry-run       # builds every variant's model and config on CPU, no steps

MFU is reported twice: against the GPU's datasheet dense bf16 peak (the number papers and llm-foundry
use, e.g. 989 TFLOP/s for an H100 SXM) and against a measured bf16 matmul peak of the same GPU.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# TinyLlama-1.1B's shape: 22 layers, hidden 2048, 32 heads / 4 KV heads, MLP 5632, vocab 32000.
FULL = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4, "vocab_size": 32000, "seq_len": 2048, "micro_batch": 8, "steps": 20, "skip": 5}
SMOKE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2, "vocab_size": 512, "seq_len": 64, "micro_batch": 2, "steps": 4, "skip": 1}
VARIANTS = ("torch", "zero2", "zero3", "zero3_offload", "lora_zero2")
# Offloaded steps run the optimizer on the CPU: fewer of them keep the run short.
STEPS_OVERRIDE = {"zero3_offload": 10}


def _llama(shape: dict, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
                         num_hidden_layers=shape["num_hidden_layers"], num_attention_heads=shape["num_attention_heads"],
                         num_key_value_heads=shape["num_key_value_heads"], vocab_size=shape["vocab_size"],
                         max_position_embeddings=shape["seq_len"], tie_word_embeddings=False, use_cache=False,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config)


def _peak_flops(device: str) -> float:
    """Best bf16 matmul FLOP/s on this device: the MFU denominator, measured, not a datasheet value."""
    import torch

    n = 8192 if device == "cuda" else 512
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# Datasheet dense (no sparsity) bf16 tensor-core peaks, FLOP/s, matched against torch's device name.
DATASHEET_BF16_PEAK = (("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12),
                       ("L40S", 362.05e12), ("A10G", 70.0e12))


def datasheet_peak(device_name: str) -> float | None:
    return next((peak for key, peak in DATASHEET_BF16_PEAK if key in device_name), None)


def _flops_per_token(model, shape: dict) -> float:
    """6N (4N for frozen weights) + attention, N without the input embedding (as rayloom.train.metrics)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dense = total - model.get_input_embeddings().weight.numel()
    return 4.0 * dense + 2.0 * min(trainable, dense) + 12.0 * shape["num_hidden_layers"] * shape["hidden_size"] * shape[
        "seq_len"]


def _ds_config(variant: str, shape: dict) -> dict:
    stage = 2 if variant in ("zero2", "lora_zero2") else 3
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if variant == "zero3_offload":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"train_micro_batch_size_per_gpu": shape["micro_batch"], "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0, "bf16": {"enabled": True}, "zero_optimization": zero,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "weight_decay": 0.0}},
            "steps_per_print": 10**9}


def _variant_main(variant: str, shape: dict, device: str, out: str) -> None:
    """One variant in this process: build, warm up, time steps, write a JSON row."""
    import torch

    launched = float(os.environ["BENCH_LAUNCHED_AT"])
    steps = STEPS_OVERRIDE.get(variant, shape["steps"]) if device == "cuda" else shape["steps"]
    peak = _peak_flops(device)
    model = _llama(shape, device)
    if variant == "lora_zero2":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    fpt = _flops_per_token(model, shape)
    if variant == "torch":
        # fused=True is the CUDA kernel; on CPU (smoke) torch's default implementation.
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device == "cuda")
        engine = model
    else:
        import deepspeed

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29641"), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
        config = _ds_config(variant, shape)
        if device != "cuda":  # smoke test on CPU: torch's AdamW instead of the CUDA FusedAdam
            config["optimizer"]["params"]["torch_adam"] = True
            config["zero_optimization"].pop("offload_param", None)
            config["zero_optimization"].pop("offload_optimizer", None)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=config)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    generator = torch.Generator(device="cpu").manual_seed(0)
    tokens = shape["micro_batch"] * shape["seq_len"]
    times, first_step_at, loss = [], None, None
    for step in range(steps):
        ids = torch.randint(0, shape["vocab_size"], (shape["micro_batch"], shape["seq_len"]), generator=generator)
        ids = ids.to(device)
        sync()
        start = time.perf_counter()
        first_step_at = first_step_at or time.time()
        if variant == "torch":
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                loss = engine(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(engine.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
        sync()
        if step >= shape["skip"]:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    sheet = datasheet_peak(torch.cuda.get_device_name()) if device == "cuda" else None
    row = {"system": variant, "steps_timed": len(times), "step_s": step_s, "tokens_per_s": tokens / step_s,
           "mfu": fpt * tokens / step_s / peak, "peak_tflops": peak / 1e12,
           "mfu_datasheet": fpt * tokens / step_s / sheet if sheet else float("nan"),
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else float("nan"),
           "startup_s": first_step_at - launched, "final_loss": float(loss)}
    Path(out).write_text(json.dumps(row))


def _rayloom_row(shape: dict, device: str) -> dict:
    """rayloom's path (Ray Train worker + DeepSpeed ZeRO-2 bf16) on the same model, saved to disk first."""
    import ray

    from rayloom.config import ClusterConfig, compose
    from rayloom.runtime import init_ray
    from rayloom.train import train

    tmp = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    _llama(shape, "cpu").save_pretrained(tmp / "model")
    rows = []
    import random

    rng = random.Random(0)
    for _ in range(shape["micro_batch"] * (shape["steps"] + 1)):
        ids = [rng.randrange(shape["vocab_size"]) for _ in range(shape["seq_len"])]
        rows.append({"input_ids": ids, "labels": ids, "position_ids": list(range(shape["seq_len"])),
                     "attention_mask": [1] * shape["seq_len"]})
    use_gpu = device == "cuda"
    cfg = compose("train", [
        "model=hf", f"model.path={tmp / 'model'}", "model.name=llama-1.1b", "deepspeed=zero2_bf16",
        "train.num_workers=1", f"train.use_gpu={str(use_gpu).lower()}", f"train.micro_batch_size={shape['micro_batch']}",
        f"train.max_steps={shape['steps']}", f"train.checkpoint_every={shape['steps']}", "train.warmup_steps=0",
        f"data.seq_len={shape['seq_len']}", f"storage.root={tmp / 'runs'}", "train.export=false",
        "tracking.progress_bar=false", "train.eval_batches=0", "train.cpus_per_worker=4" if use_gpu else
        "train.cpus_per_worker=1", "tracking.report_interval_s=5"])
    started = init_ray(ClusterConfig(num_cpus=max(4, os.cpu_count() or 1), num_gpus=1 if use_gpu else 0))
    try:
        result = train(cfg, datasets={"train": ray.data.from_items(rows, override_num_blocks=8)})
    finally:
        if started:
            ray.shutdown()
    measured = [h for h in result.history if h["step"] > shape["skip"]]
    step_s = statistics.median(h["step_time_s"] for h in measured)
    return {"system": "rayloom (Ray Train + DeepSpeed ZeRO-2 bf16)", "steps_timed": len(measured), "step_s": step_s,
            "tokens_per_s": shape["micro_batch"] * shape["seq_len"] / step_s,
            "mfu": statistics.median(h["mfu"] for h in measured), "memory_gib": measured[-1]["memory_gib"],
            "startup_s": result.startup_s, "final_loss": measured[-1]["loss"]}


def _dry_run(shape: dict) -> int:
    """Build every variant's model (at `shape`) and DeepSpeed config on CPU without training: checks the
    script, peft wrapping and the configs on a machine with no GPU."""
    for variant in VARIANTS:
        model = _llama(shape, "cpu")
        if variant == "lora_zero2":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                     task_type="CAUSAL_LM"))
        config = None if variant == "torch" else _ds_config(variant, shape)
        params = sum(p.numel() for p in model.parameters())
        stage = config["zero_optimization"]["stage"] if config else "-"
        print(f"{variant}: {params / 1e6:.2f}M parameters, ZeRO stage {stage}, "
              f"{_flops_per_token(model, shape) / 1e6:.1f} MFLOP/token")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, to check the script")
    parser.add_argument("--dry-run", action="store_true", help="build each variant's model and config on CPU, no steps")
    parser.add_argument("--rayloom", action="store_true", help="add rayloom's Ray Train + DeepSpeed row")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = SMOKE if args.smoke or args.dry_run else FULL
    device = "cpu" if args.smoke or args.dry_run else "cuda"
    if args.dry_run:
        return _dry_run(shape)
    if args.variant:  # child process
        _variant_main(args.variant, shape, device, args.out)
        return 0
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_train: no CUDA GPU here; use --smoke to check the script on CPU", file=sys.stderr)
            return 2
    import harness

    rows, failures = [], []
    for index, variant in enumerate(args.variants.split(",")):
        out = Path(tempfile.mkdtemp(prefix="gpu-bench-")) / "row.json"
        env = {**os.environ, "BENCH_LAUNCHED_AT": str(time.time()), "MASTER_PORT": str(29641 + index)}
        cmd = [sys.executable, __file__, "--variant", variant, "--out", str(out)] + (["--smoke"] if args.smoke else [])
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0 or not out.is_file():
            failures.append(f"{variant}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
            print(proc.stderr[-3000:], file=sys.stderr)
            continue
        rows.append({**json.loads(out.read_text()), "wall_s": time.perf_counter() - started})
        print(f"{variant}: {rows[-1]['tokens_per_s']:.0f} tokens/s, MFU {rows[-1]['mfu']:.3f}", flush=True)
    if args.rayloom:
        try:
            rows.append(_rayloom_row(shape, device))
        except Exception as exc:  # report and keep the other rows
            failures.append(f"rayloom: {type(exc).__name__}: {exc}")
    by = {r["system"]: r for r in rows}
    ratios = {}
    if "torch" in by:
        for name in ("zero2", "zero3", "zero3_offload", "lora_zero2"):
            if name in by:
                ratios[f"{name} / plain PyTorch (tokens/s)"] = by[name]["tokens_per_s"] / by["torch"]["tokens_per_s"]
    if "zero3" in by and "zero3_offload" in by:
        ratios["offload cost: ZeRO-3 + CPU offload / ZeRO-3 (tokens/s)"] = (
            by["zero3_offload"]["tokens_per_s"] / by["zero3"]["tokens_per_s"])
    ray_row = next((r for r in rows if r["system"].startswith("rayloom")), None)
    if ray_row and "zero2" in by:
        ratios["rayloom / DeepSpeed direct, ZeRO-2 bf16 (tokens/s)"] = ray_row["tokens_per_s"] / by["zero2"]["tokens_per_s"]
        ratios["start-up overhead: rayloom - DeepSpeed direct (seconds)"] = ray_row["startup_s"] - by["zero2"]["startup_s"]
    name = "gpu_train_smoke" if args.smoke else "gpu_train"
    result = harness.Result(
        name=name, description="~1.1B Llama (random weights) on one GPU: PyTorch vs DeepSpeed ZeRO-2/3/offload vs LoRA"
                               + (" vs rayloom" if args.rayloom else ""),
        rows=rows, ratios=ratios,
        goals={"rayloom / DeepSpeed direct, ZeRO-2 bf16 (tokens/s)": ">= 0.9"} if args.rayloom else {},
        notes=[f"shape {shape}; random token batches; bf16; median step time over the timed steps; MFU against a "
               "measured bf16 matmul peak of the same GPU"] + [f"failed: {f}" for f in failures])
    json_path, md_path = harness.write(result)
    print(harness.to_markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
