"""GRPO's advantages and clipped policy-gradient loss, restated from TRL 1.16.

TRL computes these inside `GRPOTrainer._generate_and_score_completions` (advantages,
trl/trainer/grpo_trainer.py ~line 2760) and `GRPOTrainer._compute_loss` (~line 3083), methods
bound to an accelerate-driven trainer; rayloom's loop (rayloom.train.train_fn) normalises every
loss by a count of targets over the whole optimizer step, so each loss type here is a (sum,
count) pair whose ratio is TRL's loss on one micro-batch, one process, no accumulation
(tests/unit/test_align_grpo_loss.py runs TRL's own `_compute_loss` on the same tensors):

- grpo:    mean over sequences of each sequence's token mean      -> (sum of sequence means, sequences)
- bnpo:    token mean over the batch                               -> (sum over tokens, tokens)
- dapo:    token mean over the whole accumulated global batch      -> (sum over tokens, tokens)
- dr_grpo: token sum / (sequences * max_completion_length)         -> (sum over tokens, sequences * max len)

bnpo and dapo differ in TRL only in how far the token count reaches (one micro-batch or the
global batch); rayloom always counts over the global step, so both are DAPO's token-level loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Advantages:
    advantages: torch.Tensor   # [sequences]
    std_is_zero: torch.Tensor  # [sequences] bool: the sequence's group (or batch) had no reward spread


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> Advantages:
    """TRL's sum_then_normalize advantages: reward minus its group's mean, divided by the group's (or
    the batch's) unbiased std + 1e-4 unless scale_rewards == "none". `rewards` is [groups * G], each
    group's completions consecutive."""
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards in ("group", "none"):
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    elif scale_rewards == "batch":
        std = (rewards.std() if rewards.numel() > 1 else torch.zeros(())).expand_as(rewards)
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, not {scale_rewards!r}")
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return Advantages(advantages, torch.isclose(std, torch.zeros_like(std)))


@dataclass
class TokenLoss:
    per_token_loss: torch.Tensor        # [sequences, tokens]
    per_token_kl: torch.Tensor | None   # [sequences, tokens], k3 estimator; None without a reference
    clipped: torch.Tensor               # [sequences, tokens] bool: the clipped term was the smaller one


def token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
               epsilon_high: float, kl_coef: float = 0.0, ref_logps: torch.Tensor | None = None) -> TokenLoss:
    """Per-token clipped surrogate (token-level importance sampling) plus kl_coef * k3 KL, as TRL."""
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    unclipped_term, clipped_term = ratio * adv, clipped_ratio * adv
    loss = -torch.min(unclipped_term, clipped_term)
    kl = None
    if ref_logps is not None:
        # k3: exp(ref - pi) - (ref - pi) - 1 >= 0, an unbiased estimate of KL(pi || ref) under pi's samples.
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        if kl_coef:
            loss = loss + kl_coef * kl
    return TokenLoss(loss, kl, (clipped_term < unclipped_term).detach())


def reduce_loss(loss_type: str, per_token_loss: torch.Tensor, mask: torch.Tensor,
                max_completion_length: int) -> tuple[torch.Tensor, float]:
    """(loss summed the loss type's way, the number of targets it is divided by)."""
    mask = mask.to(per_token_loss.dtype)
    sequences = per_token_loss.shape[0]
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum(), float(sequences)
    if loss_type in ("bnpo", "dapo"):
        return (per_token_loss * mask).sum(), float(mask.sum())
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum(), float(sequences * max_completion_length)
    raise ValueError(f"unknown GRPO loss_type {loss_type!r} (grpo, bnpo, dapo, dr_grpo)")


def completion_logps(logits: torch.Tensor, input_ids: torch.Tensor, prompt_len: int,
                     temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each completion token (positions prompt_len.. of input_ids) under `logits`
    ([rows, seq, vocab] for the whole input) divided by the sampling temperature, with TRL's
    selective_log_softmax. As TRL's GRPOTrainer: the policy the loss differentiates is the one the
    engines sampled from (logits / temperature), for the policy and the reference alike."""
    from trl.trainer.utils import selective_log_softmax

    targets = input_ids[:, prompt_len:]
    return selective_log_softmax(logits[:, prompt_len - 1:-1].float(), targets.long(), temperature=temperature)
