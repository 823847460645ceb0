"""The metric helpers rayloom keeps (task metrics are lm-evaluation-harness's)."""

from __future__ import annotations

import math

from rayloom.eval import metrics as M


def test_mean_and_stderr():
    assert M.mean([1.0, 0.0, 1.0, 0.0]) == 0.5
    assert math.isclose(M.stderr([1.0, 0.0, 1.0, 0.0]), math.sqrt(1 / 3 / 4))
    assert math.isnan(M.mean([])) and math.isnan(M.stderr([1.0]))


def test_metric_direction():
    assert M.lower_is_better("heldout_text/word_perplexity")
    assert M.lower_is_better("heldout_text/byte_perplexity")
    assert M.lower_is_better("demo_arith/typo_drop")
    assert M.lower_is_better("bias/likelihood_gap")
    assert M.lower_is_better("safety/over_refusal_rate")
    assert not M.lower_is_better("demo_arith/exact_match")
    assert not M.lower_is_better("safety/refusal_rate")
