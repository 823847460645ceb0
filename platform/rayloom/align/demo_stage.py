"""The main job's alignment stage (`rayloom run`): DPO with LoRA on the demo's preference pairs.

The pairs' chosen answers are checkably correct (rayloom.data.demo_corpus), so "preference
accuracy" - the share of held-out pairs (the preference shards' validation split) where the model
gives the correct answer a higher log-probability than the wrong one - is printed before and after.
The aligned model is exported and becomes what eval and serve use.
"""

from __future__ import annotations

import dataclasses

from rayloom.config import PeftConfig, RayloomConfig
from rayloom.config.train import PREFERENCE_OBJECTIVES

DEMO_ALIGN_PEFT = PeftConfig(method="lora", r=8, alpha=16, dropout=0.0)
# Held-out pairs scored before and after (the validation split, at most this many).
NUM_HELD_OUT = 200


def align_config(cfg: RayloomConfig, base_model: str | None) -> RayloomConfig:
    """LoRA DPO of `base_model` (the SFT export) or cfg.model at run.align_lr; objective=ipo|orpo is kept if chosen."""
    model = cfg.model
    if base_model is not None:
        model = dataclasses.replace(cfg.model, name=f"{cfg.model.name}-sft", preset=None, path=str(base_model))
    objective = cfg.objective if cfg.objective.name in PREFERENCE_OBJECTIVES else \
        dataclasses.replace(cfg.objective, name="dpo", loss_type="")
    peft = cfg.peft if cfg.peft.method != "none" else DEMO_ALIGN_PEFT
    train = dataclasses.replace(cfg.train, run_name="demo-align", on_existing="overwrite", export=True, export_dir="",
                                lr=cfg.run.align_lr, eval_batches=max(cfg.train.eval_batches, 4))
    return dataclasses.replace(cfg, model=model, peft=peft, train=train, objective=objective)


def _reference_text(cfg: RayloomConfig) -> str:
    from rayloom.align.preference import reference_by_disabling_adapter, uses_reference

    if not uses_reference(cfg):
        return "none (reference free)"
    return "the base with the adapter disabled" if reference_by_disabling_adapter(cfg) else "a frozen copy of the base"


def held_out_pairs(preference_data: str, limit: int = NUM_HELD_OUT) -> list[dict]:
    from rayloom.data.streaming import open_shards

    datasets = open_shards(preference_data)
    return datasets["validation" if "validation" in datasets else "train"].take(limit)


def stage_align(cfg: RayloomConfig, state) -> None:
    from rayloom.align.measure import preference_accuracy
    from rayloom.models import resolve_model_dir
    from rayloom.train.demo_stage import _print_loss_curve
    from rayloom.train.driver import train

    if state.preference_data is None:
        print("  skipped: no preference shards (the data stage did not produce state.preference_data)")
        return
    base = state.sft_dir or (state.final_model_dir if state.final_model_dir != str(state.model_dir) else None)
    run_cfg = align_config(cfg, base)
    base_dir = str(resolve_model_dir(run_cfg.model))
    objective = run_cfg.objective
    print(f"  {objective.name} ({objective.resolved_loss_type}, beta={objective.beta}) with {run_cfg.peft.method} "
          f"r={run_cfg.peft.r} of {base or run_cfg.model.name} on {state.preference_data}, "
          f"{run_cfg.train.max_steps} steps; reference: {_reference_text(run_cfg)}", flush=True)
    pairs = held_out_pairs(state.preference_data)
    before = preference_accuracy(base_dir, pairs)
    result = train(run_cfg, data_output=state.preference_data)
    _print_loss_curve(result)
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
    state.aligned_dir = result.model_dir
    state.final_model_dir = result.model_dir
    state.summary["align"] = {"objective": objective.name, "steps": result.step, "checkpoint": result.checkpoint,
                              "held_out_pairs": after.pairs, "pref_accuracy_before": before.accuracy,
                              "pref_accuracy_after": after.accuracy, "loss_first": result.history[0]["loss"]
                              if result.history else None, "loss_last": last.get("loss")}
