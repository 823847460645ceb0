"""TaskSpec: the description of a refusal probe that rayloom.align's safety measure hands to
rayloom.eval.generation.score_refusal.

Evaluation tasks themselves are lm-evaluation-harness YAMLs in conf/tasks/ (rayloom.eval.harness);
this is no task registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str = "refusal"
    data: str = ""
    description: str = ""
    max_tokens: int = 32
    # The row field saying which prompts must be refused, the phrases that mark a refusal
    # (empty -> generation.DEFAULT_REFUSAL_MARKERS), and the field grouping rows.
    should_refuse: str = "should_refuse"
    refusal_markers: tuple[str, ...] = ()
    category: str = "category"
