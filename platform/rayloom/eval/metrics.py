"""Metric functions: pure, small, checked against hand-computed values in tests/unit/test_eval_metrics.py.

BLEU and chrF come from sacrebleu and ROUGE from rouge-score (maintained packages); exact match,
perplexity, multiple-choice accuracy and calibration are a few lines each and written here.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

# Metrics where lower is better; every other metric is better higher. Names are matched on their
# last component (after the last "/"), and *_drop / *_gap suffixes are lower-is-better too.
LOWER_IS_BETTER = frozenset({
    "perplexity", "nll_per_token", "bits_per_byte", "over_refusal_rate", "likelihood_gap", "max_likelihood_gap",
    "outcome_disagreement", "preference_skew", "ece", "injection_success_rate", "max_drop", "error_rate",
    "judge_unparsed",
})


def lower_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1]
    return name in LOWER_IS_BETTER or name.endswith(("_drop", "_gap"))


_PUNCT = re.escape(string.punctuation)


def normalize_answer(text: str, ignore_case: bool = True, first_line: bool = False) -> str:
    """Collapse whitespace and trim surrounding punctuation: "  5. " == "5", "Paris!" == "paris".

    first_line: only the answer's first non-empty line counts ("5\nbecause..." == "5").
    """
    text = str(text)
    if first_line:
        text = next((line for line in text.splitlines() if line.strip()), "")
    text = " ".join(text.split())
    text = re.sub(rf"^[{_PUNCT}\s]+|[{_PUNCT}\s]+$", "", text)
    return text.lower() if ignore_case else text


def as_references(value) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def exact_match(prediction: str, references: Sequence[str], ignore_case: bool = True,
                first_line: bool = False) -> float:
    pred = normalize_answer(prediction, ignore_case, first_line)
    return float(any(pred == normalize_answer(ref, ignore_case) for ref in references))


def contains(prediction: str, references: Sequence[str], ignore_case: bool = True,
             first_line: bool = False) -> float:
    pred = normalize_answer(prediction, ignore_case, first_line)
    return float(any(normalize_answer(ref, ignore_case) in pred for ref in references if ref.strip()))


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    # sacrebleu takes one stream per reference slot; examples with fewer references pad with None.
    width = max(len(refs) for refs in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, 0-100)."""
    import sacrebleu  # here: loaded only when the metric is asked for

    return float(sacrebleu.corpus_bleu(list(predictions), _reference_streams(references)).score)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu, 0-100)."""
    import sacrebleu  # here: loaded only when the metric is asked for

    return float(sacrebleu.corpus_chrf(list(predictions), _reference_streams(references)).score)


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score), the best reference per example, in [0, 1]."""
    from rouge_score import rouge_scorer  # here: loaded only when the metric is asked for

    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        for kind in kinds:
            totals[kind] += max(scorer.score(ref, prediction)[kind].fmeasure for ref in refs)
    count = max(1, len(predictions))
    return {kind: value / count for kind, value in totals.items()}


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood per token) over a whole corpus (token-weighted)."""
    if num_tokens <= 0:
        return float("nan")
    return math.exp(total_nll / num_tokens)


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _choice_probabilities(logliks: Sequence[float]) -> list[float]:
    """Softmax over the choices' log-likelihoods: the model's belief among the offered choices."""
    top = max(logliks)
    weights = [math.exp(v - top) for v in logliks]
    total = sum(weights)
    return [w / total for w in weights]


def multiple_choice(logliks: Sequence[float], choices: Sequence[str], answer: int) -> dict[str, float]:
    """acc: argmax log-likelihood; acc_norm: argmax per byte of the choice (length-normalised)."""
    normed = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(logliks, choices, strict=True)]
    probs = _choice_probabilities(logliks)
    return {"acc": float(argmax(logliks) == answer), "acc_norm": float(argmax(normed) == answer),
            "confidence": max(probs), "prob_correct": probs[answer]}


def calibration(confidences: Sequence[float], correct: Sequence[float], num_bins: int = 10) -> dict:
    """Expected calibration error and the reliability-diagram bins (equal-width confidence bins)."""
    bins = [{"low": i / num_bins, "high": (i + 1) / num_bins, "count": 0, "confidence": 0.0, "accuracy": 0.0}
            for i in range(num_bins)]
    for conf, ok in zip(confidences, correct, strict=True):
        index = min(num_bins - 1, int(conf * num_bins))
        bins[index]["count"] += 1
        bins[index]["confidence"] += conf
        bins[index]["accuracy"] += ok
    total = max(1, len(confidences))
    ece = 0.0
    for b in bins:
        if b["count"]:
            b["confidence"] /= b["count"]
            b["accuracy"] /= b["count"]
            ece += b["count"] / total * abs(b["accuracy"] - b["confidence"])
    return {"ece": ece, "bins": bins}
