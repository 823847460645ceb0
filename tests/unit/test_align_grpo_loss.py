"""GRPO's loss and advantages (rayloom.align.grpo_loss) against TRL 1.16's own code on fixed tensors.

TRL's `GRPOTrainer._compute_loss` runs unbound on a stand-in trainer (only the attributes the loss
reads) whose model returns fixed per-token log-probabilities; rayloom's (sum, count) must equal
TRL's loss for every loss type, with and without the KL term and with clipping active, and give
the same gradient. Advantages are compared with TRL's formula (grpo_trainer.py, sum_then_normalize).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

from rayloom.align.grpo_loss import completion_logps, group_advantages, reduce_loss, token_loss  # noqa: E402

B, T, MAX_LEN = 6, 5, 8


class _Accelerator:
    num_processes = 1
    sync_gradients = False

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(B, T, generator=g) * 3).requires_grad_(True)
    old = (logps.detach() + 0.4 * torch.randn(B, T, generator=g))  # ratios well outside 1 +- 0.2
    ref = logps.detach() + 0.3 * torch.randn(B, T, generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    mask[5, 4:] = 0
    advantages = torch.randn(B, generator=g)
    return logps, old, ref, mask, advantages


def _trl_loss(loss_type: str, beta: float, logps, old, ref, mask, advantages, eps_low=0.2, eps_high=0.28):
    fake = SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1), loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, use_vllm=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=MAX_LEN, accelerator=_Accelerator(),
        _entropy_bonus_enabled=False, _metrics={"train": defaultdict(list)}, aux_loss_enabled=False,
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None))
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum().float()}
    return trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs), fake._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(loss_type, beta):
    logps, old, ref, mask, advantages = _tensors()
    expected, trl_metrics = _trl_loss(loss_type, beta, logps, old, ref, mask, advantages)
    (expected_grad,) = torch.autograd.grad(expected, logps)
    loss = token_loss(logps, old, advantages, 0.2, 0.28, beta, ref if beta else None)
    total, count = reduce_loss(loss_type, loss.per_token_loss, mask, MAX_LEN)
    ours = total / count
    (grad,) = torch.autograd.grad(ours, logps)
    assert float(ours.detach()) == pytest.approx(float(expected), rel=1e-6, abs=1e-7)
    assert torch.allclose(grad, expected_grad, atol=1e-7)
    if beta:
        kl_mean = float((loss.per_token_kl * mask).sum() / mask.sum())
        assert kl_mean == pytest.approx(trl_metrics["kl"][0], rel=1e-6)


def test_clipping_is_active_in_the_fixture():
    logps, old, ref, mask, advantages = _tensors()
    loss = token_loss(logps, old, advantages, 0.2, 0.28)
    assert 0 < float(loss.clipped[mask.bool()].float().mean()) < 1


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logps, old, ref, mask, advantages = _tensors()
    same = token_loss(logps, logps.detach(), advantages, 0.2, 0.2, 0.1, logps.detach())
    assert torch.allclose(same.per_token_kl, torch.zeros_like(logps))
    moved = token_loss(logps, logps.detach(), advantages, 0.2, 0.2, 0.1, ref)
    assert bool((moved.per_token_kl >= 0).all()) and float(moved.per_token_kl.sum()) > 0


def _trl_advantages(rewards, g, scale):
    """grpo_trainer.py (TRL 1.16) ~lines 2763-2788, sum_then_normalize with one reward function."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return adv, torch.isclose(std, torch.zeros_like(std))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_equal_trl(scale):
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2, 0.0, 1.2, 0.5, 0.3])
    ours = group_advantages(rewards, 4, scale)
    adv, zero = _trl_advantages(rewards, 4, scale)
    assert torch.allclose(ours.advantages, adv, atol=1e-6)
    assert torch.equal(ours.std_is_zero, zero)
    if scale == "group":
        assert ours.std_is_zero.tolist() == [False] * 4 + [True] * 4 + [False] * 4
        assert torch.allclose(ours.advantages[4:8], torch.zeros(4))


def test_completion_logps_pick_the_completion_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 7, 11, generator=g)
    ids = torch.randint(0, 11, (2, 7), generator=g)
    got = completion_logps(logits, ids, prompt_len=3)
    full = torch.log_softmax(logits, -1)
    expected = torch.stack([full[r, 2:6].gather(-1, ids[r, 3:7, None]).squeeze(-1) for r in range(2)])
    assert got.shape == (2, 4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_completion_logps_score_the_tempered_policy_the_engines_sample_from():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 7, 11, generator=g)
    ids = torch.randint(0, 11, (2, 7), generator=g)
    got = completion_logps(logits, ids, prompt_len=3, temperature=0.5)
    full = torch.log_softmax(logits / 0.5, -1)
    expected = torch.stack([full[r, 2:6].gather(-1, ids[r, 3:7, None]).squeeze(-1) for r in range(2)])
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, completion_logps(logits, ids, prompt_len=3), atol=1e-2)
