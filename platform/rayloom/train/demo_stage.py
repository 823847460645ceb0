"""The main job's training stages (`rayloom run`): pre-train the tiny model, then LoRA-SFT it.

Each stage trains through `rayloom.train.driver.train` on the shards the data stage committed,
prints the loss falling, and hands its exported Hugging Face directory to the next stage. Without
input data a stage says so and skips; it never fakes a result.
"""

from __future__ import annotations

import dataclasses

from rayloom.config import DeepSpeedConfig, PeftConfig, RayloomConfig

# The demo's pre-training setting (issue #4): ZeRO-2 with the optimizer state offloaded to CPU.
DEMO_PRETRAIN_DEEPSPEED = DeepSpeedConfig(zero_stage=2, offload_optimizer="cpu")
# SFT of the ~4M-parameter demo model is a full fine-tune, 4x the pre-training steps: measured on the
# demo's held-out tasks, LoRA (r=8, 100 steps) left every exact-match score at 0 while a full
# fine-tune reaches ~0.6 on "next number" after 400 steps. `peft=lora` (or dora) still selects LoRA.
DEMO_SFT_STEPS_FACTOR = 4
DEMO_SFT_MIN_LR = 1e-3


def _print_loss_curve(result, rows: int = 8) -> None:
    history = result.history
    if not history:
        print("  (no steps ran: the run had already reached train.max_steps)")
        return
    every = max(1, len(history) // rows)
    shown = history[::every] + ([history[-1]] if (len(history) - 1) % every else [])
    print(f"  {'step':>5}  {'loss':>8}  {'val_loss':>8}  {'lr':>9}  {'tok/s':>7}")
    for h in shown:
        val = f"{h['val_loss']:8.4f}" if "val_loss" in h else f"{'':8}"
        print(f"  {h['step']:>5}  {h['loss']:8.4f}  {val}  {h['lr']:9.2e}  {h['tokens_per_s']:7.0f}")
    first, last = history[0]["loss"], history[-1]["loss"]
    trend = "falling" if last < first else "NOT falling"
    print(f"  loss {first:.3f} -> {last:.3f} ({trend}); MFU {100 * history[-1]['mfu']:.1f}% of a measured "
          f"{history[-1]['peak_flops_per_worker'] / 1e9:.0f} GFLOP/s per worker")


def pretrain_config(cfg: RayloomConfig) -> RayloomConfig:
    """Causal-LM pre-training of cfg.model; ZeRO-2 + CPU optimizer offload unless deepspeed=... was chosen."""
    deepspeed = DEMO_PRETRAIN_DEEPSPEED if cfg.deepspeed == DeepSpeedConfig() else cfg.deepspeed
    train = dataclasses.replace(cfg.train, run_name="demo-pretrain", on_existing="overwrite", export=True,
                                export_dir="")
    return dataclasses.replace(cfg, deepspeed=deepspeed, train=train, peft=PeftConfig(),
                               objective=dataclasses.replace(cfg.objective, name="clm"))


def sft_config(cfg: RayloomConfig, base_model: str | None) -> RayloomConfig:
    """SFT (assistant-only loss) of `base_model` (the pre-trained export) or cfg.model: a full
    fine-tune unless cfg.peft picks a method."""
    model = cfg.model
    if base_model is not None:
        model = dataclasses.replace(cfg.model, name=f"{cfg.model.name}-pretrained", preset=None, path=str(base_model))
    t = cfg.train
    train = dataclasses.replace(t, run_name="demo-sft", on_existing="overwrite", export=True, export_dir="",
                                lr=max(t.lr, DEMO_SFT_MIN_LR), max_steps=t.max_steps * DEMO_SFT_STEPS_FACTOR,
                                checkpoint_every=t.checkpoint_every * DEMO_SFT_STEPS_FACTOR,
                                eval_every=t.eval_every * DEMO_SFT_STEPS_FACTOR)
    return dataclasses.replace(cfg, model=model, train=train, objective=dataclasses.replace(cfg.objective, name="sft"))


def stage_pretrain(cfg: RayloomConfig, state) -> None:
    from rayloom.train.driver import train

    if state.pretrain_data is None:
        print("  skipped: no pre-training shards (the data stage did not produce state.pretrain_data)")
        return
    run_cfg = pretrain_config(cfg)
    ds = run_cfg.deepspeed
    print(f"  pre-training {run_cfg.model.name} on {state.pretrain_data}: {run_cfg.train.num_workers} Ray Train "
          f"workers, DeepSpeed ZeRO-{ds.zero_stage}" + (f" + {ds.offload_optimizer} optimizer offload"
                                                         if ds.offload_optimizer != "none" else "")
          + f", {run_cfg.train.max_steps} steps", flush=True)
    result = train(run_cfg, data_output=state.pretrain_data)
    _print_loss_curve(result)
    print(f"  checkpoint {result.checkpoint}\n  model {result.model_dir}")
    state.pretrained_dir = result.model_dir
    state.final_model_dir = result.model_dir
    state.summary["pretrain"] = {"loss_first": result.history[0]["loss"] if result.history else None,
                                 "loss_last": result.metrics.get("loss"), "steps": result.step,
                                 "checkpoint": result.checkpoint}


def stage_sft(cfg: RayloomConfig, state) -> None:
    from rayloom.train.driver import train

    if state.sft_data is None:
        print("  skipped: no SFT shards (the data stage did not produce state.sft_data)")
        return
    run_cfg = sft_config(cfg, state.pretrained_dir)
    method = "full fine-tune" if run_cfg.peft.method == "none" else f"{run_cfg.peft.method} (r={run_cfg.peft.r})"
    print(f"  SFT, {method}, assistant-only loss, of "
          f"{state.pretrained_dir or run_cfg.model.name} on {state.sft_data}, {run_cfg.train.max_steps} steps",
          flush=True)
    result = train(run_cfg, data_output=state.sft_data)
    _print_loss_curve(result)
    print((f"  adapter {result.adapter_dir}\n  merged model" if result.adapter_dir else "  model") + f" {result.model_dir}")
    state.sft_dir = result.model_dir
    state.adapter_dir = result.adapter_dir
    state.final_model_dir = result.model_dir
    state.summary["sft"] = {"loss_first": result.history[0]["loss"] if result.history else None,
                            "loss_last": result.metrics.get("loss"), "steps": result.step,
                            "adapter": result.adapter_dir}
