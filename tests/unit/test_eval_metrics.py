"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rayloom.eval import metrics as M
from rayloom.eval.requests import score_span


def test_exact_match_normalises_whitespace_case_and_edge_punctuation():
    assert M.exact_match("  5. ", ["5"]) == 1.0
    assert M.exact_match("Paris!", ["paris"]) == 1.0
    assert M.exact_match("Paris", ["paris"], ignore_case=False) == 0.0
    assert M.exact_match("55", ["5"]) == 0.0
    assert M.exact_match("the  for\nkeyword", ["The for keyword."]) == 1.0
    assert M.exact_match("7", ["6", "7"]) == 1.0


def test_exact_match_first_line_only_when_asked():
    assert M.exact_match("12\nbecause 5 + 7 = 12", ["12"]) == 0.0
    assert M.exact_match("12\nbecause 5 + 7 = 12", ["12"], first_line=True) == 1.0
    assert M.exact_match("\n\n12\nmore", ["12"], first_line=True) == 1.0


def test_contains():
    assert M.contains("The answer is def.", ["def"]) == 1.0
    assert M.contains("no idea", ["def"]) == 0.0
    assert M.contains("anything", [""]) == 0.0


def test_bleu_and_chrf_bounds_and_multi_reference_padding():
    assert M.bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    assert M.bleu(["zzz qqq xxx yyy"], [["the cat sat on the mat"]]) == pytest.approx(0.0)
    assert M.chrf(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    # Examples with different numbers of references: the matching reference counts.
    preds = ["the cat sat on the mat", "a dog ran in the park"]
    refs = [["something else entirely", "the cat sat on the mat"], ["a dog ran in the park"]]
    assert M.bleu(preds, refs) == pytest.approx(100.0)


def test_rouge_hand_computed():
    scores = M.rouge(["the cat sat"], [["the cat sat on the mat"]])
    # unigrams: P = 3/3, R = 3/6 -> F = 2/3; bigrams: P = 2/2, R = 2/5 -> F = 4/7; LCS = 3 -> F = 2/3.
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    # The best of several references is taken.
    assert M.rouge(["the cat sat"], [["dog", "the cat sat"]])["rouge1"] == pytest.approx(1.0)


def test_mean_stderr_perplexity():
    assert M.mean([0, 1, 0, 1]) == 0.5
    assert M.stderr([0, 1, 0, 1]) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert math.isnan(M.stderr([1.0]))
    assert M.perplexity(2 * math.log(4), 2) == pytest.approx(4.0)
    assert math.isnan(M.perplexity(1.0, 0))


def test_multiple_choice_acc_acc_norm_confidence():
    # "x" is more likely in total, "yyyy" per byte: acc and acc_norm disagree.
    scores = M.multiple_choice([-2.0, -3.0], ["x", "yyyy"], answer=1)
    assert scores["acc"] == 0.0
    assert scores["acc_norm"] == 1.0
    assert scores["confidence"] == pytest.approx(1 / (1 + math.exp(-1)))
    assert scores["prob_correct"] == pytest.approx(1 - 1 / (1 + math.exp(-1)))


def test_calibration_ece_hand_computed():
    calib = M.calibration([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1])
    # bin [0.9, 1.0]: confidence 0.95, accuracy 0.5; bin [0.5, 0.6]: confidence 0.55, accuracy 1.0.
    assert calib["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    used = [b for b in calib["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in used] == [(2, 1.0), (2, 0.5)]


def test_metric_direction():
    assert M.lower_is_better("heldout_text/perplexity")
    assert M.lower_is_better("demo_arith/typo_drop")
    assert M.lower_is_better("bias/likelihood_gap")
    assert M.lower_is_better("safety/over_refusal_rate")
    assert not M.lower_is_better("demo_arith/exact_match")
    assert not M.lower_is_better("safety/refusal_rate")


def test_score_span_counts_tokens_at_or_after_the_boundary():
    # Tokens start at 0 (BOS, no logprob), 0, 4, 8; the continuation starts at character 4.
    logprobs = [None, -1.0, -2.0, -0.5]
    starts = [0, 0, 4, 8]
    tops = [None, -1.0, -1.5, -0.5]
    total, count, greedy = score_span(logprobs, starts, 4, tops)
    assert (total, count, greedy) == (-2.5, 2, False)
    total, count, greedy = score_span(logprobs, starts, 0, tops)
    assert (total, count) == (-3.5, 3)
    assert score_span([None, -1.0], [0, 0], 0, [None, -1.0])[2] is True
