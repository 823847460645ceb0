"""Preference objectives (objective=dpo|ipo|orpo) for the one training loop (rayloom.train.train_fn).

A batch holds preference rows (rayloom.data.schema.PREFERENCE_COLUMNS); chosen and rejected sides
go through the model as one batch of 2 x rows, as TRL does. The loop's normalisation counts pairs:
an objective's loss_sum is the sum of the per-pair losses of its micro-batch.

The reference policy of dpo/ipo is the starting model: with a peft adapter, the same model with the
adapter disabled (peft's `disable_adapter()`, no second copy in memory); without one (or with
objective.reference=copy) a frozen copy, wrapped by DeepSpeed for inference the way TRL's
`prepare_deepspeed` does it, so under ZeRO-3 it is partitioned like the policy. orpo needs none.

Metrics (per logged step, averaged over pairs of all ranks; the same with a `val_` prefix on the
validation split, i.e. held-out pairs): rewards_chosen / rewards_rejected (beta * log-ratio to
the reference; orpo: beta * mean token log-prob), reward_margin, reward_accuracy (share of pairs
whose chosen reward is higher), logps_chosen / logps_rejected (summed response log-probs),
pref_accuracy (share of pairs the model itself ranks right: log p(chosen) > log p(rejected)), and
kl_to_ref (mean per-token KL(policy || reference) on response tokens; dpo/ipo only).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from rayloom.align.reference import reference_forward, unwrap
from rayloom.config import RayloomConfig
from rayloom.config.train import PREFERENCE_OBJECTIVES
from rayloom.data.schema import PREFERENCE_COLUMNS
from rayloom.errors import UserError
from rayloom.train.objectives import Objective, register_objective

log = logging.getLogger(__name__)

# Sums kept per bucket ("train", "val"); metrics are ratios of these over all ranks.
_SUMS = ("pairs", "rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "logps_chosen",
         "logps_rejected", "pref_accuracy", "kl_sum", "kl_tokens")
_PER_PAIR = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "logps_chosen",
             "logps_rejected", "pref_accuracy")


def uses_reference(cfg: RayloomConfig) -> bool:
    return cfg.objective.name in ("dpo", "ipo")


def reference_by_disabling_adapter(cfg: RayloomConfig) -> bool:
    return uses_reference(cfg) and cfg.objective.reference == "auto" and cfg.peft.method != "none"


def check_preference_config(cfg: RayloomConfig) -> None:
    if cfg.deepspeed.tensor_parallel_size > 1:
        raise UserError(f"invalid config value deepspeed.tensor_parallel_size={cfg.deepspeed.tensor_parallel_size}: "
                        f"objective.name={cfg.objective.name!r} does not work with AutoTP (its reference policy is not "
                        "sharded); use ZeRO (deepspeed=zero2 / zero3) for preference tuning")


class PreferenceRun:
    """Per-worker state of a preference objective: the reference policy and the metric sums."""

    def __init__(self, cfg: RayloomConfig) -> None:
        self.cfg = cfg
        self.reference: Any = None  # a DeepSpeed inference engine around the frozen copy
        self.sums: dict[str, dict[str, float]] = {"train": dict.fromkeys(_SUMS, 0.0), "val": dict.fromkeys(_SUMS, 0.0)}

    # --- set-up (worker, after deepspeed.initialize of the policy) ---
    def attach(self, engine, ds_config: dict) -> None:
        if not uses_reference(self.cfg) or reference_by_disabling_adapter(self.cfg):
            return
        self.reference = build_reference_engine(self.cfg, ds_config, engine.device)

    # --- the loss ---
    def loss_sum(self, model, batch: dict):
        import torch

        from rayloom.align.losses import dpo_losses, orpo_losses, sequence_logps, token_kl

        objective = self.cfg.objective
        rows = batch["chosen_input_ids"].shape[0]
        inputs = _concatenated_inputs(batch)
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]]).long()
        reference_logits = None
        if uses_reference(self.cfg):
            with torch.no_grad():
                reference_logits = self._reference_forward(model, inputs).logits
        logits = model(**inputs).logits
        logps = sequence_logps(logits, labels)
        chosen, rejected = _split(logps, rows)
        if uses_reference(self.cfg):
            ref = sequence_logps(reference_logits, labels).logps
            pairs = dpo_losses(objective.resolved_loss_type, objective.beta, objective.label_smoothing, chosen,
                               rejected, ref[:rows].detach(), ref[rows:].detach())
        else:
            pairs = orpo_losses(objective.beta, chosen, rejected)
        self._record("train" if unwrap(model).training else "val", pairs, chosen, rejected, rows,
                     (lambda: token_kl(logits.detach(), reference_logits, logps.mask))
                     if reference_logits is not None else None, logps.mask)
        return pairs.losses.sum()

    def _reference_forward(self, model, inputs: dict):
        return reference_forward(model, inputs, self.reference, reference_by_disabling_adapter(self.cfg))

    # --- metrics ---
    def _record(self, bucket: str, pairs, chosen, rejected, rows: int, kl, mask) -> None:
        sums = self.sums[bucket]
        margin = pairs.chosen_rewards - pairs.rejected_rewards
        sums["pairs"] += rows
        sums["rewards_chosen"] += float(pairs.chosen_rewards.sum())
        sums["rewards_rejected"] += float(pairs.rejected_rewards.sum())
        sums["reward_margin"] += float(margin.sum())
        sums["reward_accuracy"] += float((margin > 0).float().sum())
        sums["logps_chosen"] += float(chosen.logps.detach().sum())
        sums["logps_rejected"] += float(rejected.logps.detach().sum())
        sums["pref_accuracy"] += float((chosen.logps.detach() > rejected.logps.detach()).float().sum())
        if kl is not None:
            sums["kl_sum"] += float(kl())
            sums["kl_tokens"] += float(mask.sum())

    def report_metrics(self) -> dict:
        """Collective: reduce both buckets over all ranks, return their means, start new windows."""
        import torch
        import torch.distributed as dist

        values = torch.tensor([self.sums[b][k] for b in ("train", "val") for k in _SUMS], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(values)
        reduced = dict(zip([(b, k) for b in ("train", "val") for k in _SUMS], values.tolist(), strict=True))
        metrics: dict[str, float] = {}
        for bucket, prefix in (("train", ""), ("val", "val_")):
            pairs = reduced[(bucket, "pairs")]
            if pairs <= 0:
                continue
            metrics.update({f"{prefix}{k}": reduced[(bucket, k)] / pairs for k in _PER_PAIR})
            if reduced[(bucket, "kl_tokens")] > 0:
                metrics[f"{prefix}kl_to_ref"] = reduced[(bucket, "kl_sum")] / reduced[(bucket, "kl_tokens")]
            metrics[f"{prefix}pairs"] = pairs
        self.sums = {"train": dict.fromkeys(_SUMS, 0.0), "val": dict.fromkeys(_SUMS, 0.0)}
        return metrics


def _concatenated_inputs(batch: dict) -> dict:
    import torch

    # Right-padded rows: the attention mask only hides padding, which carries no labels.
    return {"input_ids": torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]]).long(),
            "attention_mask": torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]]).long(),
            "use_cache": False}


def _split(logps, rows: int):
    from rayloom.align.losses import SequenceLogps

    return (SequenceLogps(logps.logps[:rows], logps.num_tokens[:rows], logps.mask[:rows]),
            SequenceLogps(logps.logps[rows:], logps.num_tokens[rows:], logps.mask[rows:]))



def build_reference_engine(cfg: RayloomConfig, ds_config: dict, device):
    """A frozen copy of the starting model behind a DeepSpeed inference engine.

    As TRL's `prepare_deepspeed`: the training-only blocks (optimizer, offload of its state) are
    dropped; ZeRO-3 keeps stage 3 so the copy is partitioned like the policy, other stages run
    the copy whole (stage 0), which the policy's ZeRO-1/2 partitioning does not affect.
    """
    import deepspeed

    from rayloom.models import load_model, resolve_model_dir
    from rayloom.models.peft_wrap import load_quantized_base

    model_dir = resolve_model_dir(cfg.model)
    if cfg.peft.method == "qlora":
        model = load_quantized_base(model_dir, cfg.peft, device.index or 0)
    else:
        model = load_model(model_dir, cfg.model.dtype, cfg.model.trust_remote_code)
    model.config.use_cache = False
    model.requires_grad_(False)
    model.eval()
    config = copy.deepcopy(ds_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.pop("activation_checkpointing", None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    if zero.get("stage", 0) != 3:
        config["zero_optimization"] = {"stage": 0}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def _count_pairs(batch: dict):
    return batch["chosen_input_ids"].shape[0]


def _count_tokens(batch: dict):
    return batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum()


def preference_objective(cfg: RayloomConfig) -> Objective:
    """objective=dpo|ipo|orpo on preference shards."""
    check_preference_config(cfg)
    run = PreferenceRun(cfg)
    return Objective(name=cfg.objective.name, columns=PREFERENCE_COLUMNS, count_targets=_count_pairs,
                     loss_sum=run.loss_sum, count_tokens=_count_tokens, data_kind="preference",
                     attach=run.attach, report_metrics=run.report_metrics,
                     summary_metrics=("pref_accuracy", "reward_accuracy", "reward_margin", "kl_to_ref"))


for _name in PREFERENCE_OBJECTIVES:
    register_objective(_name, preference_objective)
