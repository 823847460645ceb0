"""Per-pair preference losses and the sequence log-probabilities they are built from.

TRL 1.16 computes these inside `DPOTrainer._compute_loss` / `ORPOTrainer.odds_ratio_loss`,
methods bound to an accelerate-driven trainer that cannot run inside rayloom's Ray Train +
DeepSpeed loop, so the formulas are restated here (a few lines each, following TRL's forms:
cDPO label smoothing, rDPO, SLiC hinge, TRL's length-normalised IPO, ORPO's odds ratio).
The per-token log-probabilities come from TRL's own `selective_log_softmax`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rayloom.data.schema import IGNORE_INDEX

LOG_2 = math.log(2.0)


@dataclass
class SequenceLogps:
    """Summed log-probabilities of each row's response tokens, and how many there are."""

    logps: torch.Tensor        # [rows]
    num_tokens: torch.Tensor   # [rows]
    # Response positions (after the shift), for the KL to the reference.
    mask: torch.Tensor         # [rows, seq_len - 1] bool


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> SequenceLogps:
    """Log-probability of each row's labelled tokens; labels are aligned with the inputs (the model's
    next-token shift happens here) and IGNORE_INDEX marks the prompt and padding."""
    from trl.trainer.utils import selective_log_softmax

    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    per_token = selective_log_softmax(logits[:, :-1].float(), labels.masked_fill(~mask, 0).long())
    per_token = per_token * mask
    return SequenceLogps(per_token.sum(-1), mask.sum(-1), mask)


def token_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed KL(policy || reference) over the vocabulary at the masked (response) positions.

    The exact per-token divergence on the data's contexts, not a sampled estimate; only the
    response positions are materialised, so a large vocabulary costs rows x response tokens x V.
    """
    with torch.no_grad():
        policy = F.log_softmax(policy_logits[:, :-1][mask].float(), dim=-1)
        reference = F.log_softmax(reference_logits[:, :-1][mask].float(), dim=-1)
        return (policy.exp() * (policy - reference)).sum()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both ends (Maechler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -LOG_2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass
class PairLosses:
    losses: torch.Tensor            # [pairs], the quantity the optimizer minimises
    chosen_rewards: torch.Tensor    # [pairs], detached
    rejected_rewards: torch.Tensor  # [pairs], detached


def dpo_losses(loss_type: str, beta: float, label_smoothing: float, chosen: SequenceLogps, rejected: SequenceLogps,
               ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> PairLosses:
    """DPO-family losses against a reference policy; the reward is beta * log(pi / pi_ref)."""
    chosen_ratio = chosen.logps - ref_chosen
    rejected_ratio = rejected.logps - ref_rejected
    delta = beta * (chosen_ratio - rejected_ratio)
    if loss_type == "sigmoid":
        # DPO; with label smoothing eps the conservative cDPO: the label is wrong with probability eps.
        losses = -(1 - label_smoothing) * F.logsigmoid(delta) - label_smoothing * F.logsigmoid(-delta)
    elif loss_type == "robust":
        # rDPO: an unbiased estimate of the clean-label loss under flip probability eps.
        losses = (-(1 - label_smoothing) * F.logsigmoid(delta) + label_smoothing * F.logsigmoid(-delta)) \
            / (1 - 2 * label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - delta)
    elif loss_type == "ipo":
        # IPO's squared loss on the log-ratio gap, each side averaged per response token (TRL's
        # normalisation, agreed with the IPO authors, so beta does not depend on response length).
        gap = chosen_ratio / chosen.num_tokens.clamp(min=1) - rejected_ratio / rejected.num_tokens.clamp(min=1)
        losses = (gap - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}")
    return PairLosses(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def orpo_losses(beta: float, chosen: SequenceLogps, rejected: SequenceLogps) -> PairLosses:
    """ORPO (reference free): the chosen response's per-token NLL minus beta * log sigmoid of the
    log odds ratio of the per-token-averaged likelihoods (ORPO paper eqs. 4-7, TRL's form)."""
    chosen_avg = chosen.logps / chosen.num_tokens.clamp(min=1)
    rejected_avg = rejected.logps / rejected.num_tokens.clamp(min=1)
    log_odds = (chosen_avg - rejected_avg) - (log1mexp(chosen_avg) - log1mexp(rejected_avg))
    losses = -chosen_avg - beta * F.logsigmoid(log_odds)
    return PairLosses(losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())
