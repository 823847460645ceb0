"""The demo's training stages: pre-train, SFT, align (LoRA DPO) and the optional sweep.

Each takes its own composed config (run.stage.<name> + the command line, see rayloom.recipes.demo)
and the DemoState; it trains on the shards the data stage committed, prints the loss falling and
hands its exported Hugging Face directory to the next stage.
"""

from __future__ import annotations

import dataclasses

from rayloom.config import RayloomConfig
from rayloom.recipes.state import DemoState

# Held-out preference pairs scored before and after alignment (the validation split, at most this many).
NUM_HELD_OUT = 200


def starting_from(cfg: RayloomConfig, model_dir: str | None, suffix: str) -> RayloomConfig:
    """cfg training the model an earlier stage exported (named <model.name>-<suffix>), or cfg.model
    itself when no earlier stage ran. This is the recipe's data flow, not a setting."""
    if model_dir is None:
        return cfg
    model = dataclasses.replace(cfg.model, name=f"{cfg.model.name}-{suffix}", preset=None, path=str(model_dir))
    return dataclasses.replace(cfg, model=model)


def stage_pretrain(cfg: RayloomConfig, state: DemoState) -> None:
    from rayloom.train import train

    ds = cfg.deepspeed
    offload = f" + {ds.offload_optimizer} optimizer offload" if ds.offload_optimizer != "none" else ""
    print(f"  pre-training {cfg.model.name} on {state.pretrain_data}: {cfg.train.num_workers} Ray Train workers, "
          f"DeepSpeed ZeRO-{ds.zero_stage}{offload}, lr {cfg.train.lr:g}, {cfg.train.max_steps} steps", flush=True)
    result = train(cfg, data_output=state.pretrain_data)
    print_loss_curve(result.history)
    print(f"  checkpoint {result.checkpoint}\n  model {result.model_dir}")
    state.pretrained_dir = state.final_model_dir = result.model_dir
    state.summary["pretrain"] = {"loss_first": result.history[0]["loss"] if result.history else None,
                                 "loss_last": result.metrics.get("loss"), "steps": result.step,
                                 "checkpoint": result.checkpoint, "lr": cfg.train.lr,
                                 "zero_stage": ds.zero_stage, "offload_optimizer": ds.offload_optimizer}


def stage_sft(cfg: RayloomConfig, state: DemoState) -> None:
    from rayloom.train import train

    cfg = starting_from(cfg, state.pretrained_dir, "pretrained")
    method = "full fine-tune" if cfg.peft.method == "none" else f"{cfg.peft.method} (r={cfg.peft.r})"
    print(f"  SFT, {method}, assistant-only loss, of {state.pretrained_dir or cfg.model.name} on {state.sft_data}, "
          f"lr {cfg.train.lr:g}, {cfg.train.max_steps} steps", flush=True)
    result = train(cfg, data_output=state.sft_data)
    print_loss_curve(result.history)
    print((f"  adapter {result.adapter_dir}\n  merged model" if result.adapter_dir else "  model")
          + f" {result.model_dir}")
    state.sft_dir = state.final_model_dir = result.model_dir
    state.adapter_dir = result.adapter_dir
    state.summary["sft"] = {"loss_first": result.history[0]["loss"] if result.history else None,
                            "loss_last": result.metrics.get("loss"), "steps": result.step,
                            "adapter": result.adapter_dir, "lr": cfg.train.lr, "peft": cfg.peft.method}


def stage_align(cfg: RayloomConfig, state: DemoState) -> None:
    """Preference tuning of the newest model. The pairs' chosen answers are checkably correct
    (rayloom.data.demo_corpus), so the share of held-out pairs where the model gives the correct
    answer the higher log-probability is printed before and after."""
    from rayloom.align import preference_accuracy
    from rayloom.data import open_shards
    from rayloom.models import resolve_model_dir
    from rayloom.train import train

    trained = state.final_model_dir if state.final_model_dir != str(state.model_dir) else None
    cfg = starting_from(cfg, trained, "sft" if trained == state.sft_dir else "pretrained")
    objective = cfg.objective
    print(f"  {objective.name} ({objective.resolved_loss_type}, beta={objective.beta}) with {cfg.peft.method} "
          f"r={cfg.peft.r} of {trained or cfg.model.name} on {state.preference_data}, lr {cfg.train.lr:g}, "
          f"{cfg.train.max_steps} steps; reference: {_reference_text(cfg)}", flush=True)
    datasets = open_shards(state.preference_data)
    pairs = datasets["validation" if "validation" in datasets else "train"].take(NUM_HELD_OUT)
    before = preference_accuracy(str(resolve_model_dir(cfg.model)), pairs)
    result = train(cfg, data_output=state.preference_data)
    print_loss_curve(result.history)
    after = preference_accuracy(result.model_dir, pairs)
    last = result.history[-1] if result.history else {}
    if "reward_accuracy" in last:
        print(f"  last step: reward margin {last['reward_margin']:.3f}, reward accuracy "
              f"{last['reward_accuracy']:.2f}" + (f", KL to reference {last['kl_to_ref']:.4f}"
                                                   if "kl_to_ref" in last else ""))
    trend = "up" if after.accuracy > before.accuracy else "NOT up"
    print(f"  preference accuracy on {after.pairs} held-out pairs (correct answer more likely than the wrong one): "
          f"{before.accuracy:.3f} -> {after.accuracy:.3f} ({trend}); mean log-prob margin "
          f"{before.mean_margin:.3f} -> {after.mean_margin:.3f}")
    print(f"  adapter {result.adapter_dir}\n  aligned model {result.model_dir}")
    state.aligned_dir = state.final_model_dir = result.model_dir
    state.summary["align"] = {"objective": objective.name, "steps": result.step, "checkpoint": result.checkpoint,
                              "held_out_pairs": after.pairs, "pref_accuracy_before": before.accuracy,
                              "pref_accuracy_after": after.accuracy, "lr": cfg.train.lr,
                              "loss_first": result.history[0]["loss"] if result.history else None,
                              "loss_last": last.get("loss")}


def _reference_text(cfg: RayloomConfig) -> str:
    from rayloom.align import reference_by_disabling_adapter, uses_reference

    if not uses_reference(cfg):
        return "none (reference free)"
    return "the base with the adapter disabled" if reference_by_disabling_adapter(cfg) else "a frozen copy of the base"


def stage_tune(cfg: RayloomConfig, state: DemoState) -> None:
    """A small sweep of short pre-training runs: the trial table (which trials the scheduler
    stopped) and the best values; the best config is left as an experiment YAML in the sweep dir."""
    from rayloom.tune import sweep

    tune = cfg.tune
    print(f"  {tune.scheduler.upper()} sweep {tune.name!r}: {tune.num_samples} trials of {cfg.model.name} "
          f"({cfg.train.max_steps} steps, an evaluation every {cfg.train.max_steps // tune.num_reports}), "
          f"{tune.max_concurrent_trials} at a time, over {', '.join(tune.space)}", flush=True)
    result = sweep(cfg, data_output=state.pretrain_data)
    print("  " + result.render().replace("\n", "\n  "))
    state.summary["tune"] = {"best_values": result.best_values, "best_metric": result.best_metric,
                             "best_checkpoint": result.best_checkpoint, "best_config": result.best_config_path,
                             "trial_steps": result.total_steps,
                             "stopped_early": sum(t.status == "stopped early" for t in result.trials)}


def print_loss_curve(history: list[dict], rows: int = 8) -> None:
    """About `rows` evenly spaced steps of a training history (and the last), then the trend and MFU."""
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
