"""Metric helpers rayloom keeps: which direction is better (gate, comparison, report) and the mean /
standard error of per-example scores (refusal, judge, robustness). Task metrics are lm-eval's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Metrics where lower is better; every other metric is better higher. Names are matched on their
# last component (after the last "/"), and *_drop / *_gap suffixes are lower-is-better too.
LOWER_IS_BETTER = frozenset({
    "perplexity", "nll_per_token", "bits_per_byte", "over_refusal_rate", "likelihood_gap", "max_likelihood_gap",
    "outcome_disagreement", "preference_skew", "ece", "injection_success_rate", "max_drop", "error_rate",
    "judge_unparsed", "word_perplexity", "byte_perplexity", "brier_score",
})


def lower_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1]
    return name in LOWER_IS_BETTER or name.endswith(("_drop", "_gap", "perplexity"))


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)
