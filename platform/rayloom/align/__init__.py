"""Alignment and safety tuning on top of rayloom.train: the DPO family of preference objectives
(dpo, ipo, orpo), online RL with verifiable rewards (grpo: vLLM rollouts in Ray actors), the
safety recipe (a shipped seed set mixed into SFT, or preference pairs for DPO) and their
before/after measurements.

Importing this package registers its objectives with rayloom.train (`objective=dpo|ipo|orpo|
safety_sft|grpo`); it does not import torch or Ray.
"""

from rayloom.align.grpo import grpo_objective
from rayloom.align.measure import measure_refusals, preference_accuracy
from rayloom.align.preference import preference_objective, reference_by_disabling_adapter, uses_reference
from rayloom.align.safety_mix import safety_sft_objective

__all__ = ["grpo_objective", "measure_refusals", "preference_accuracy", "preference_objective",
           "reference_by_disabling_adapter", "safety_sft_objective", "uses_reference"]
