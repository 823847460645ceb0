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


def text_words(text: str) -> list[str]:
    """The lower-cased words the repetition filter counts; the MinHash shingles use the same words,
    so a read task computes them once per record (dedup.minhash_signatures takes them)."""
    return _WORD.findall(text.lower())


def filter_reason(text: str, filters: FilterConfig, words: list[str] | None = None) -> str | None:
    """The first filter that drops `text`, or None when it passes (`words`: text_words(text), if known).

    Decides exactly as comparing each score with its limit, but skips a score that cannot exceed its
    limit: the symbol and boilerplate fractions are at most 1, and the repetition score has a cheap
    upper bound (`_repetition_exceeds`). The filters were a third of the read task's time."""
    if len(text) < filters.min_chars:
        return "too_short"
    if len(text) > filters.max_chars:
        return "too_long"
    if _repetition_exceeds(text, text_words(text) if words is None else words, filters.max_repetition):
        return "repetition"
    if filters.max_symbol_fraction < 1.0 and symbol_fraction(text) > filters.max_symbol_fraction:
        return "symbols"
    if filters.max_boilerplate_fraction < 1.0 and \
            boilerplate_fraction(text, filters.boilerplate_phrases) > filters.max_boilerplate_fraction:
        return "boilerplate"
    return None


def repetition_fraction(text: str, words: list[str] | None = None) -> float:
    """Max of: chars in repeated lines / all chars, and chars covered by the top word 2/3/4-gram."""
    words = text_words(text) if words is None else words
    return max(_line_repetition(text), _ngram_repetition(words, sum(map(len, words)) or 1))


def _repetition_exceeds(text: str, words: list[str], limit: float) -> bool:
    """repetition_fraction(text) > limit, without counting n-grams when they cannot exceed it.

    An n-gram occurs at most as often as its first word, and spans at most n times the longest
    word, so its score is at most (top word count) * 4 * (longest word) / (word chars); the
    products are integers and float division is monotonic, so the bound never hides a drop."""
    if "\n" in text and _line_repetition(text) > limit:   # one line cannot repeat itself
        return True
    if len(words) < _MIN_WORDS_FOR_NGRAMS:
        return False
    word_chars = sum(map(len, words)) or 1
    top = max(Counter(words).values())
    if top < 2 or top * 4 * max(map(len, words)) / word_chars <= limit:
        return False
    return _ngram_repetition(words, word_chars) > limit


def _line_repetition(text: str) -> float:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    total = sum(map(len, lines)) or 1
    counts = Counter(lines)
    return sum(len(line) * (n - 1) for line, n in counts.items() if n > 1) / total


def _ngram_repetition(words: list[str], word_chars: int) -> float:
    score = 0.0
    if len(words) >= _MIN_WORDS_FOR_NGRAMS:
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
