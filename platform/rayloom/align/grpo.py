"""objective=grpo: online RL with verifiable rewards, in the one training loop (rayloom.train.train_fn).

Data: the preference shards (`data=demo_preference`); each row's prompt (the tokens before its
first label) is what the policy answers, its chosen response the reference answer the reward
functions check. Per optimizer step, on every worker:

1. sync: if the policy changed since the engines last got it, push its weights to this worker's
   rollout engines (rayloom.align.rollout; LoRA merged, ZeRO-3 parameters gathered - a collective
   every rank reaches, since every rank syncs at the same point of the step);
2. rollout: each prompt of each micro-batch gets grpo.num_generations completions from vLLM;
3. score: the reward functions of grpo.rewards, group-relative advantages (TRL's definitions);
4. update: the loop's forward/backward/step with the clipped surrogate + optional k3 KL to the
   reference (adapter disabled for LoRA, else a frozen copy as for DPO).

It rides on the Objective protocol without a hook of its own: the loop asks every micro-batch
of a step for its target count before any loss, so the first `count_targets` of a step is where
the sync and rollouts happen (the batch dict carries the rollout on to `loss_sum`); a `loss_sum`
in training mode marks the policy changed. Placement: colocated engines reserve no CPU and take
turns with training; split engines reserve grpo.rollout_cpus / rollout_gpus each.

Metrics (per logged step, over all ranks): reward_mean / reward_std, reward_<function>,
frac_zero_std_groups, completion_length, finished_ratio, kl (k3, mean over completion tokens; only
when kl_coef > 0), clip_ratio, rollout_tokens_per_s (generated tokens / rollout time),
update_tokens_per_s, rollout_s / sync_s / update_s (wall time per step of each phase),
engine_restarts.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

from rayloom.align.reference import reference_forward, unwrap
from rayloom.config import RayloomConfig
from rayloom.data.schema import IGNORE_INDEX
from rayloom.errors import UserError
from rayloom.train.objectives import Objective, register_objective

log = logging.getLogger(__name__)

COLUMNS = ("chosen_input_ids", "chosen_labels", "chosen_attention_mask")
_SUMS = ("steps", "sequences", "groups", "reward_sum", "reward_sq", "zero_std_groups", "completion_tokens",
         "finished", "kl_sum", "kl_tokens", "clipped", "loss_tokens", "rollout_s", "sync_s", "update_s",
         "update_tokens", "logprob_diff")
_ROLLOUT = "_grpo_rollout"


def uses_reference(cfg: RayloomConfig) -> bool:
    return cfg.objective.grpo.kl_coef > 0


def reference_by_disabling_adapter(cfg: RayloomConfig) -> bool:
    return uses_reference(cfg) and cfg.objective.reference == "auto" and cfg.peft.method != "none"


def split_prompt(input_ids, labels) -> tuple[list[int], list[int]]:
    """(prompt ids, reference answer ids) of one preference row: the answer is the labelled span."""
    labelled = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    if not labelled:
        return input_ids.tolist(), []
    return input_ids[:labelled[0]].tolist(), input_ids[labelled[0]:labelled[-1] + 1].tolist()


class Rollout:
    """One micro-batch's completions, rewards and the tensors the loss needs."""

    def __init__(self, prompt_ids: list[list[int]], completions: list[list[Any]], rewards, advantages, per_reward,
                 pad_id: int, device) -> None:
        import torch

        groups = [(p, c) for p, group in zip(prompt_ids, completions, strict=True) for c in group]
        prompt_len = max(len(p) for p, _ in groups)
        completion_len = max(1, max(len(c.token_ids) for _, c in groups))
        rows = len(groups)
        ids = torch.full((rows, prompt_len + completion_len), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        engine_logps = torch.zeros((rows, completion_len), dtype=torch.float32)
        for row, (prompt, completion) in enumerate(groups):
            ids[row, prompt_len - len(prompt):prompt_len] = torch.tensor(prompt)  # prompts left-padded
            mask[row, prompt_len - len(prompt):prompt_len] = 1
            tokens = completion.token_ids
            if tokens:
                ids[row, prompt_len:prompt_len + len(tokens)] = torch.tensor(tokens)
                mask[row, prompt_len:prompt_len + len(tokens)] = 1
                n = min(len(tokens), len(completion.logprobs))
                engine_logps[row, :n] = torch.tensor(completion.logprobs[:n], dtype=torch.float32)
        self.input_ids, self.attention_mask = ids.to(device), mask.to(device)
        self.position_ids = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        self.completion_mask = mask[:, prompt_len:].to(device)
        # What the engine sampled each token with: beside the trainer's log-prob of the same token it
        # shows whether the engine holds the policy's weights (verl and OpenRLHF report the same gap).
        self.engine_logps = engine_logps.to(device)
        self.prompt_len = prompt_len
        self.rewards, self.advantages, self.per_reward = rewards, advantages.to(device), per_reward
        self.finished = [c.finished for _, c in groups]


class GrpoRun:
    """Per-worker state: rollout engines, reference policy, phase timers and metric sums."""

    def __init__(self, cfg: RayloomConfig) -> None:
        self.cfg = cfg
        self.grpo = cfg.objective.grpo
        self.loss_type = cfg.objective.resolved_loss_type
        self.pool = None
        self.engine = None
        self.reference: Any = None
        self.ds_stage = 0
        self.policy_changed = True  # sync before the first rollout (a resumed policy differs from the start)
        self.update_started: float | None = None
        self.reward_names: list[str] = []
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.reward_sums: dict[str, float] = {}
        self.rollout_seed = cfg.train.seed

    # --- set-up (worker, after deepspeed.initialize of the policy) ---
    def attach(self, engine, ds_config: dict) -> None:
        import ray.train

        from rayloom.align.preference import build_reference_engine
        from rayloom.align.rewards import resolve_rewards
        from rayloom.align.rollout import EngineSpec, RolloutPool
        from rayloom.models import resolve_model_dir

        self.engine = engine
        self.ds_stage = ds_config.get("zero_optimization", {}).get("stage", 0)
        self.rewards = resolve_rewards(self.grpo.rewards)
        self.reward_names = [f.__name__ for f in self.rewards]
        self.reward_sums = dict.fromkeys(self.reward_names, 0.0)
        if uses_reference(self.cfg) and not reference_by_disabling_adapter(self.cfg):
            self.reference = build_reference_engine(self.cfg, ds_config, engine.device)
        split = self.grpo.placement == "split"
        model = self.cfg.model
        spec = EngineSpec(model_dir=str(resolve_model_dir(model)),
                          dtype=model.dtype if model.dtype in ("float32", "bfloat16", "float16") else "auto",
                          max_model_len=min(self.cfg.data.seq_len + self.grpo.max_completion_tokens,
                                            engine.module.config.max_position_embeddings),
                          kv_cache_gib=self.grpo.kv_cache_gib, seed=self.cfg.train.seed,
                          num_cpus=self.grpo.rollout_cpus if split else 0,
                          num_gpus=self.grpo.rollout_gpus if split else 0)
        self.rank = ray.train.get_context().get_world_rank()
        self.rollout_seed += 1000 * self.rank
        self.pool = RolloutPool(spec, self.grpo.num_engines, self.grpo.max_engine_restarts)
        self.pad_id = engine.module.config.pad_token_id or 0

    # --- sync + rollout, at the first count_targets of a step ---
    def _close_update(self) -> None:
        if self.update_started is not None:
            self.sums["update_s"] += time.perf_counter() - self.update_started
            self.update_started = None

    def sync_weights(self) -> float:
        """Push the policy's current weights to this worker's engines (a collective under ZeRO-3)."""
        weights = policy_weights(self.engine, self.ds_stage)
        seconds = self.pool.update_weights(weights)
        self.policy_changed = False
        return seconds

    def rollout(self, batch: dict) -> Rollout:
        if _ROLLOUT in batch:
            return batch[_ROLLOUT]
        import torch

        from rayloom.align.grpo_loss import group_advantages
        from rayloom.align.rewards import score

        self._close_update()
        if self.policy_changed:
            started = time.perf_counter()
            self.sync_weights()
            self.sums["sync_s"] += time.perf_counter() - started
        started = time.perf_counter()
        split = [split_prompt(i.cpu(), lab.cpu()) for i, lab in zip(batch["chosen_input_ids"],
                                                                   batch["chosen_labels"], strict=True)]
        prompts = [p for p, _ in split]
        self.rollout_seed += 1
        completions = self.pool.generate(prompts, self.grpo.num_generations, self.grpo.max_completion_tokens,
                                         self.grpo.temperature, self.grpo.top_p, self.rollout_seed)
        texts = self.pool.decode(prompts + [a for _, a in split])
        prompt_texts, answers = texts[:len(prompts)], texts[len(prompts):]
        g = self.grpo.num_generations
        flat = [c for group in completions for c in group]
        total, per_reward = score(self.rewards, list(self.grpo.reward_weights),
                                  prompts=[t for t in prompt_texts for _ in range(g)],
                                  completions=[c.text for c in flat], answers=[a for a in answers for _ in range(g)],
                                  finished=[c.finished for c in flat])
        rewards = torch.tensor(total, dtype=torch.float32)
        adv = group_advantages(rewards, g, self.grpo.scale_rewards)
        rollout = Rollout(prompts, completions, rewards, adv.advantages, per_reward, self.pad_id,
                          batch["chosen_input_ids"].device)
        batch[_ROLLOUT] = rollout
        elapsed = time.perf_counter() - started
        if _is_training(self.engine):
            s = self.sums
            s["rollout_s"] += elapsed
            s["sequences"] += len(flat)
            s["groups"] += len(prompts)
            s["reward_sum"] += float(rewards.sum())
            s["reward_sq"] += float((rewards ** 2).sum())
            s["zero_std_groups"] += float(adv.std_is_zero.view(-1, g)[:, 0].sum())
            s["completion_tokens"] += sum(len(c.token_ids) for c in flat)
            s["finished"] += sum(c.finished for c in flat)
            for name, values in per_reward.items():
                self.reward_sums[name] += sum(values)
        return rollout

    # --- the Objective's functions ---
    def count_targets(self, batch: dict):
        rollout = self.rollout(batch)
        mask = rollout.completion_mask
        if self.loss_type == "grpo":
            return mask.shape[0]
        if self.loss_type == "dr_grpo":
            return mask.shape[0] * self.grpo.max_completion_tokens
        return mask.sum()

    def count_tokens(self, batch: dict):
        return self.rollout(batch).attention_mask.sum()

    def loss_sum(self, model, batch: dict):
        import torch

        from rayloom.align.grpo_loss import completion_logps, reduce_loss, token_loss

        rollout = self.rollout(batch)
        training = _is_training(model)
        if training and self.update_started is None:
            self.update_started = time.perf_counter()
        inputs = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                  "position_ids": rollout.position_ids, "use_cache": False}
        temperature = self.grpo.temperature
        logps = completion_logps(model(**inputs).logits, rollout.input_ids, rollout.prompt_len, temperature)
        ref_logps = None
        if uses_reference(self.cfg):
            with torch.no_grad():
                ref_logps = completion_logps(self._reference_forward(model, inputs).logits, rollout.input_ids,
                                             rollout.prompt_len, temperature)
        # One update per rollout (TRL's num_iterations=1): the old policy is the current one, detached.
        loss = token_loss(logps, logps.detach(), rollout.advantages, self.grpo.epsilon,
                          self.grpo.resolved_epsilon_high, self.grpo.kl_coef, ref_logps)
        total, _ = reduce_loss(self.loss_type, loss.per_token_loss, rollout.completion_mask,
                               self.grpo.max_completion_tokens)
        if training:
            mask = rollout.completion_mask.bool()
            self.policy_changed = True
            self.sums["loss_tokens"] += float(mask.sum())
            self.sums["clipped"] += float(loss.clipped[mask].sum())
            self.sums["update_tokens"] += float(rollout.attention_mask.sum())
            gap = (logps.detach().float() - rollout.engine_logps).abs()
            self.sums["logprob_diff"] += float(gap[mask].nan_to_num(0.0).sum())
            if loss.per_token_kl is not None:
                self.sums["kl_sum"] += float(loss.per_token_kl.detach()[mask].sum())
                self.sums["kl_tokens"] += float(mask.sum())
        return total

    def _reference_forward(self, model, inputs: dict):
        return reference_forward(model, inputs, self.reference, reference_by_disabling_adapter(self.cfg))

    def report_metrics(self) -> dict:
        """Collective: the window's metrics over all ranks; starts a new window."""
        import torch
        import torch.distributed as dist

        self._close_update()
        self.sums["steps"] += 1
        keys = list(_SUMS) + [f"reward:{n}" for n in self.reward_names]
        values = torch.tensor([self.sums[k] for k in _SUMS] + [self.reward_sums[n] for n in self.reward_names],
                              dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(values)
        world = dist.get_world_size() if dist.is_initialized() else 1
        r = dict(zip(keys, values.tolist(), strict=True))
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.reward_sums = dict.fromkeys(self.reward_names, 0.0)
        n = r["sequences"]
        if n <= 0:
            return {}
        mean = r["reward_sum"] / n
        metrics = {
            "reward_mean": mean,
            "reward_std": max(r["reward_sq"] / n - mean * mean, 0.0) ** 0.5,
            "frac_zero_std_groups": r["zero_std_groups"] / max(r["groups"], 1.0),
            "completion_length": r["completion_tokens"] / n,
            "finished_ratio": r["finished"] / n,
            "clip_ratio": r["clipped"] / max(r["loss_tokens"], 1.0),
            # Mean |log p_trainer - log p_engine| of the sampled tokens: ~0 when the sync works.
            "rollout_logprob_diff": r["logprob_diff"] / max(r["loss_tokens"], 1.0),
            # Each phase's wall time per step on a worker, averaged over ranks (steps counts rank-steps).
            "rollout_s": r["rollout_s"] / r["steps"],
            "sync_s": r["sync_s"] / r["steps"],
            "update_s": r["update_s"] / r["steps"],
            # Tokens of all ranks over one rank's (mean) phase time.
            "rollout_tokens_per_s": r["completion_tokens"] * world / max(r["rollout_s"], 1e-9),
            "update_tokens_per_s": r["update_tokens"] * world / max(r["update_s"], 1e-9),
            "engine_restarts": float(self.pool.restarts if self.pool else 0),
        }
        if r["kl_tokens"] > 0:
            metrics["kl"] = r["kl_sum"] / r["kl_tokens"]
        for name in self.reward_names:
            metrics[f"reward_{name}"] = r[f"reward:{name}"] / n
        return metrics


def _is_training(model) -> bool:
    return bool(getattr(model, "training", True))


def policy_weights(engine, zero_stage: int) -> list:
    """The policy's weights as (Hugging Face name, CPU tensor) pairs, LoRA merged into its base layers.

    Under ZeRO-3 every rank must call this (the parameters are gathered collectively)."""
    import torch

    model = unwrap(engine)
    gather = nullcontext()
    if zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    with torch.no_grad(), gather:
        if hasattr(model, "get_base_model"):  # a peft model
            return _merged_lora_weights(model)
        return [(name, p.detach().to("cpu", copy=True)) for name, p in model.named_parameters()]


def _merged_lora_weights(peft_model) -> list:
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    out: dict[str, Any] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight.detach().clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
            out[f"{name}.weight"] = weight
            bias = getattr(module.get_base_layer(), "bias", None)
            if bias is not None:
                out[f"{name}.bias"] = bias.detach().clone()
    for name, p in base.named_parameters():
        if "lora_" in name or ".base_layer." in name or "modules_to_save" in name or "original_module" in name:
            continue
        out.setdefault(name, p.detach().clone())
    return [(k, v.to("cpu")) for k, v in out.items()]


def check_grpo_config(cfg: RayloomConfig) -> None:
    if cfg.deepspeed.tensor_parallel_size > 1:
        raise UserError(f"invalid config value deepspeed.tensor_parallel_size={cfg.deepspeed.tensor_parallel_size}: "
                        "objective.name='grpo' does not work with AutoTP; use ZeRO (deepspeed=zero2 / zero3)")
    if cfg.peft.method == "qlora":
        raise UserError("invalid config value peft.method='qlora': objective.name='grpo' pushes merged weights to "
                        "vLLM and cannot merge into 4-bit layers; use peft=lora or full fine-tuning")
    if cfg.peft.modules_to_save:
        raise UserError("invalid config value peft.modules_to_save: objective.name='grpo' does not sync "
                        "modules_to_save copies to the rollout engines yet")


def grpo_objective(cfg: RayloomConfig) -> Objective:
    """objective=grpo on preference shards (prompts + reference answers)."""
    check_grpo_config(cfg)
    run = GrpoRun(cfg)
    return Objective(name="grpo", columns=COLUMNS, count_targets=run.count_targets, loss_sum=run.loss_sum,
                     count_tokens=run.count_tokens, data_kind="preference", attach=run.attach,
                     report_metrics=run.report_metrics,
                     summary_metrics=("reward_mean", "kl", "completion_length", "frac_zero_std_groups"))


register_objective("grpo", grpo_objective)
