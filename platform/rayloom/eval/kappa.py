"""Inter-rater agreement: Cohen's kappa (two raters, optionally weighted) and Fleiss' kappa (many raters).

Hand-written (a dozen lines each): scikit-learn has only Cohen's and is not a rayloom dependency,
statsmodels (which has Fleiss') is not installed. Tests check both against published worked
examples.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def cohens_kappa(rater_a: Sequence[Hashable], rater_b: Sequence[Hashable],
                 categories: Sequence[Hashable] | None = None, weights: str = "none") -> float:
    """Cohen's kappa of two raters over the same items.

    weights: "none" (nominal), "linear" or "quadratic" (ordinal: `categories` in scale order;
    disagreement weighted by distance). 1 = perfect agreement, 0 = chance level.
    """
    if len(rater_a) != len(rater_b):
        raise ValueError("both raters must rate the same items")
    if not rater_a:
        return float("nan")
    cats = list(categories) if categories is not None else sorted(set(rater_a) | set(rater_b), key=str)
    index = {c: i for i, c in enumerate(cats)}
    k, n = len(cats), len(rater_a)
    observed = [[0.0] * k for _ in range(k)]
    for a, b in zip(rater_a, rater_b, strict=True):
        observed[index[a]][index[b]] += 1.0 / n
    row = [sum(observed[i]) for i in range(k)]
    col = [sum(observed[i][j] for i in range(k)) for j in range(k)]

    def weight(i: int, j: int) -> float:
        if weights == "none":
            return float(i != j)
        distance = abs(i - j) / max(1, k - 1)
        return distance if weights == "linear" else distance**2

    if weights not in ("none", "linear", "quadratic"):
        raise ValueError(f"weights must be none, linear or quadratic, not {weights!r}")
    disagree_obs = sum(weight(i, j) * observed[i][j] for i in range(k) for j in range(k))
    disagree_exp = sum(weight(i, j) * row[i] * col[j] for i in range(k) for j in range(k))
    if disagree_exp == 0:
        # Both raters used one and the same category throughout: agreement is total but kappa is undefined.
        return 1.0 if disagree_obs == 0 else 0.0
    return 1.0 - disagree_obs / disagree_exp


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an items x categories table of how many raters chose each category.

    Every item must be rated by the same number of raters (>= 2).
    """
    if not counts:
        return float("nan")
    raters = sum(counts[0])
    if raters < 2 or any(sum(row) != raters for row in counts):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    num_items, k = len(counts), len(counts[0])
    p_items = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts]
    p_bar = sum(p_items) / num_items
    p_cats = [sum(row[j] for row in counts) / (num_items * raters) for j in range(k)]
    p_e = sum(p * p for p in p_cats)
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)
