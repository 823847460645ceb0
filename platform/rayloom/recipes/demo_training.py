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
    _record(cfg, state, "train", result)
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
    _record(cfg, state, "sft", result)
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
    _record(cfg, state, "align", result)
    state.summary["align"] = {"objective": objective.name, "steps": result.step, "checkpoint": result.checkpoint,
                              "held_out_pairs": after.pairs, "pref_accuracy_before": before.accuracy,
                              "pref_accuracy_after": after.accuracy, "lr": cfg.train.lr,
                              "loss_first": result.history[0]["loss"] if result.history else None,
                              "loss_last": last.get("loss")}


def stage_rl(cfg: RayloomConfig, state: DemoState) -> None:
    """Online RL (GRPO) of the newest model on the preference shards' prompts, rewarded by the
    held-out tasks' own grading; prints the reward rising (or not) and where the time went."""
    from rayloom.train import train

    trained = state.final_model_dir if state.final_model_dir != str(state.model_dir) else None
    suffix = {state.aligned_dir: "aligned", state.sft_dir: "sft"}.get(trained, "pretrained")
    cfg = starting_from(cfg, trained, suffix)
    grpo = cfg.objective.grpo
    print(f"  GRPO ({cfg.objective.resolved_loss_type} loss) of {trained or cfg.model.name}, "
          f"{'full fine-tune' if cfg.peft.method == 'none' else cfg.peft.method}, on the prompts of "
          f"{state.preference_data}: {grpo.num_generations} samples per prompt, {grpo.placement} vLLM rollout "
          f"engine(s), rewards {', '.join(r.rsplit('.', 1)[-1] for r in grpo.rewards)}, lr {cfg.train.lr:g}, "
          f"{cfg.train.max_steps} steps", flush=True)
    result = train(cfg, data_output=state.preference_data)
    history = result.history
    if history:
        print(f"  {'step':>5}  {'reward':>7}  {'reward_std':>10}  {'zero-std groups':>15}  {'length':>6}")
        for h in _evenly_spaced(history):
            print(f"  {h['step']:>5}  {h['reward_mean']:7.3f}  {h['reward_std']:10.3f}  "
                  f"{h['frac_zero_std_groups']:15.2f}  {h['completion_length']:6.1f}")
        first, last = _mean(history[:5], "reward_mean"), _mean(history[-5:], "reward_mean")
        print(f"  reward (mean of 5 steps) {first:.3f} -> {last:.3f} ({'up' if last > first else 'NOT up'}); "
              f"time per step: rollout {_mean(history, 'rollout_s'):.2f}s, weight sync {_mean(history, 'sync_s'):.2f}s, "
              f"update {_mean(history, 'update_s'):.2f}s; rollout {_mean(history, 'rollout_tokens_per_s'):.0f} tok/s")
    print(f"  model {result.model_dir}")
    state.rl_dir = state.final_model_dir = result.model_dir
    _record(cfg, state, "rl", result)
    state.summary["rl"] = {"steps": result.step, "checkpoint": result.checkpoint, "lr": cfg.train.lr,
                           "reward_first": history[0]["reward_mean"] if history else None,
                           "reward_last": history[-1]["reward_mean"] if history else None}


def _evenly_spaced(history: list[dict], rows: int = 8) -> list[dict]:
    """About `rows` evenly spaced steps of a history, and always the last."""
    every = max(1, len(history) // rows)
    return history[::every] + ([history[-1]] if (len(history) - 1) % every else [])


def _mean(history: list[dict], key: str) -> float:
    values = [h[key] for h in history if key in h]
    return sum(values) / len(values) if values else float("nan")


def _record(cfg: RayloomConfig, state: DemoState, stage: str, result) -> None:
    """The stage's model on held-out data (rayloom.recipes.demo_scores), printed and kept for the goals."""
    from rayloom.data import open_shards
    from rayloom.data.demo_corpus import demo_eval_examples
    from rayloom.recipes.demo_scores import held_out_texts, score_model

    if result.history:
        state.scores.losses[stage] = (result.history[0]["loss"], result.history[-1]["loss"])
    pairs = None
    if state.preference_data:
        datasets = open_shards(state.preference_data)
        pairs = datasets["validation" if "validation" in datasets else "train"].take(NUM_HELD_OUT)
    score = score_model(result.model_dir, demo_eval_examples(cfg.data.num_demo_eval, cfg.data.seed),
                        held_out_texts(), pairs)
    state.scores.scores[stage] = score
    tasks = ", ".join(f"{task} {value:.2f}" for task, value in score.exact_match.items())
    pref = f"; preference accuracy {score.preference_accuracy:.3f}" if score.preference_accuracy is not None else ""
    print(f"  held-out: exact match {score.mean_exact_match:.3f} ({tasks}); text perplexity "
          f"{score.text_perplexity:.4g}/token{pref}")


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
    shown = _evenly_spaced(history, rows)
    print(f"  {'step':>5}  {'loss':>8}  {'val_loss':>8}  {'lr':>9}  {'tok/s':>7}")
    for h in shown:
        val = f"{h['val_loss']:8.4f}" if "val_loss" in h else f"{'':8}"
        print(f"  {h['step']:>5}  {h['loss']:8.4f}  {val}  {h['lr']:9.2e}  {h['tokens_per_s']:7.0f}")
    first, last = history[0]["loss"], history[-1]["loss"]
    trend = "falling" if last < first else "NOT falling"
    print(f"  loss {first:.3f} -> {last:.3f} ({trend}); MFU {100 * history[-1]['mfu']:.1f}% of a measured "
          f"{history[-1]['peak_flops_per_worker'] / 1e9:.0f} GFLOP/s per worker")
