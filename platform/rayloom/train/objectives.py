"""Training objectives: what a batch means and how its loss is summed.

The training loop normalises every loss by the number of targets in the whole optimizer step (all
data-parallel ranks and accumulation steps together), so results do not depend on how a global
batch is cut into micro-batches or workers. An objective therefore gives two things per
micro-batch: the number of targets, and the loss summed over them.

Builders are registered by the package that provides them, when it is imported: this module
registers clm and sft; rayloom.align registers dpo, ipo, orpo and safety_sft (it builds on the
`Objective` type here, and rayloom.train never imports it). The training driver looks the builder
up once and hands the function itself to the workers, which import its module when they unpickle it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rayloom.config import RayloomConfig
from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS
from rayloom.errors import UserError


@dataclass(frozen=True)
class Objective:
    name: str
    # Dataset columns the objective reads (each a list of seq_len ints per row).
    columns: tuple[str, ...]
    # batch (dict of tensors on the model's device) -> number of loss targets in it
    count_targets: Callable[[dict], Any]
    # (model, batch) -> loss summed over the batch's targets (a scalar tensor)
    loss_sum: Callable[[Any, dict], Any]
    # batch -> number of real (non-padding) tokens, for throughput
    count_tokens: Callable[[dict], Any]
    # Shard kind the objective trains on (rayloom.data.schema: "lm" or "preference").
    data_kind: str = "lm"
    # Driver side: ({split: Dataset}, cfg, seq_len) -> {split: Dataset}, to change what the workers
    # read (safety_sft mixes its seed set in); None -> the shards as they are.
    prepare_data: Callable[[dict, RayloomConfig, int], dict] | None = None
    # Worker side, once after deepspeed.initialize: (engine, deepspeed config dict) -> None, for
    # objectives that need more than the trained model (a frozen reference policy).
    attach: Callable[[Any, dict], None] | None = None
    # Worker side, a collective every rank calls at each logged step: the objective's own metrics
    # since the previous call (train and "val_" ones), already reduced over ranks.
    report_metrics: Callable[[], dict] | None = None
    # Metrics of its own that `rayloom train`'s summary shows first -> last beside the loss.
    summary_metrics: tuple[str, ...] = ()


def _lm_count_targets(batch: dict):
    # The model shifts labels by one inside its loss, so the first label of each row is never a target.
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def _lm_count_tokens(batch: dict):
    return batch["attention_mask"].sum()


def lm_inputs(batch: dict) -> dict:
    """Model inputs for packed causal-LM rows.

    Right-padded rows (the shard contract) need no attention mask under a causal model: real
    tokens never attend to later padding, and padding carries no labels. Leaving the mask out lets
    transformers read document boundaries from the restarting position_ids and build a
    block-diagonal mask, so packed documents do not attend to each other. Rows padded anywhere
    else keep their mask.
    """
    mask = batch["attention_mask"]
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    inputs = {"input_ids": batch["input_ids"].long(), "position_ids": batch["position_ids"].long(),
              "labels": batch["labels"].long(), "use_cache": False}
    if not right_padded:
        inputs["attention_mask"] = mask.long()
    return inputs


def _lm_loss_sum(model, batch: dict):
    # num_items_in_batch=1 makes transformers' causal-LM loss a sum over targets (it shifts labels).
    return model(**lm_inputs(batch), num_items_in_batch=1).loss


def causal_lm(cfg: RayloomConfig) -> Objective:
    """Next-token cross-entropy on the `labels` column.

    Pre-training (clm) and SFT (sft) share it: SFT shards carry IGNORE_INDEX on every
    non-assistant token, so the same loss trains only on assistant turns.
    """
    return Objective(name=cfg.objective.name, columns=LM_COLUMNS, count_targets=_lm_count_targets,
                     loss_sum=_lm_loss_sum, count_tokens=_lm_count_tokens)


ObjectiveBuilder = Callable[[RayloomConfig], Objective]

_BUILDERS: dict[str, ObjectiveBuilder] = {}


def register_objective(name: str, builder: ObjectiveBuilder) -> None:
    """Make `objective.name=<name>` train with `builder(cfg)`; called by the providing package on import.

    `builder` must be a module-level function: the workers receive it pickled by reference."""
    _BUILDERS[name] = builder


def objective_builder(name: str) -> ObjectiveBuilder:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise UserError(f"objective.name={name!r} has no registered builder in this process (registered: "
                        f"{', '.join(sorted(_BUILDERS))}); objectives register when the package providing "
                        "them is imported: `import rayloom.align` for dpo, ipo, orpo and safety_sft") from None


def build_objective(cfg: RayloomConfig) -> Objective:
    return objective_builder(cfg.objective.name)(cfg)


register_objective("clm", causal_lm)
register_objective("sft", causal_lm)
