"""Quality filters: length bounds, repetition, symbol and boilerplate heuristics.

Hand-written because they are a few lines each and must run inside Ray Data tasks without extra
dependencies; the heuristics follow the Gopher / C4 rules (duplicate-line and top-n-gram
character fractions, symbol ratio, boilerplate lines). Each returns the reason a record is
dropped, so the job can count drops per reason.
"""

from __future__ import annotations

import re
from collections import Counter

from rayloom.config.data import FilterConfig

FILTER_REASONS = ("too_short", "too_long", "repetition", "symbols", "boilerplate")

_WORD = re.compile(r"\w+", re.UNICODE)
# A visible character that is not alphanumeric. Python's \w is exactly str.isalnum() plus "_",
# and \s exactly str.isspace(), so this is `not c.isspace() and not c.isalnum()` run by the regex
# engine in C instead of a Python loop over every character (it was half of the read stage).
_SYMBOL = re.compile(r"[^\w\s]|_")
# n-gram repetition is only meaningful with enough words to repeat.
_MIN_WORDS_FOR_NGRAMS = 20


def filter_reason(text: str, filters: FilterConfig) -> str | None:
    """The first filter that drops `text`, or None when it passes."""
    if len(text) < filters.min_chars:
        return "too_short"
    if len(text) > filters.max_chars:
        return "too_long"
    if repetition_fraction(text) > filters.max_repetition:
        return "repetition"
    if symbol_fraction(text) > filters.max_symbol_fraction:
        return "symbols"
    if boilerplate_fraction(text, filters.boilerplate_phrases) > filters.max_boilerplate_fraction:
        return "boilerplate"
    return None


def repetition_fraction(text: str) -> float:
    """Max of: chars in repeated lines / all chars, and chars covered by the top word 2/3/4-gram."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    total = sum(map(len, lines)) or 1
    counts = Counter(lines)
    duplicated = sum(len(line) * (n - 1) for line, n in counts.items() if n > 1)
    score = duplicated / total
    words = _WORD.findall(text.lower())
    if len(words) >= _MIN_WORDS_FOR_NGRAMS:
        word_chars = sum(map(len, words)) or 1
        for n in (2, 3, 4):
            grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))   # n-grams, built in C
            gram, count = grams.most_common(1)[0]
            if count > 1:
                score = max(score, count * sum(len(w) for w in gram) / word_chars)
    return score


def symbol_fraction(text: str) -> float:
    visible = sum(map(len, text.split()))   # str.split() splits on exactly the str.isspace() characters
    if not visible:
        return 0.0
    return len(_SYMBOL.findall(text)) / visible


def boilerplate_fraction(text: str, phrases: list[str]) -> float:
    if not phrases:
        return 0.0
    lines = [line.lower() for line in text.split("\n") if line.strip()]
    if not lines:
        return 0.0
    lowered = [p.lower() for p in phrases]
    return sum(1 for line in lines if any(p in line for p in lowered)) / len(lines)
