"""Verifiable rewards for objective=grpo, and how config names them.

A reward function is any module-level Python function named in `objective.grpo.rewards` as
"module.function", called once per batch of completions with keyword arguments:

    fn(prompts: list[str], completions: list[str], answers: list[str], finished: list[bool]) -> list[float]

`completions` are the decoded completions (special tokens skipped), `answers` the reference
answers of their prompts (the chosen response of the preference shards), `finished` whether the
completion ended with the end-of-turn token rather than running out of tokens. Weighted rewards
are summed (TRL's sum_then_normalize).

The shipped ones grade the demo's checkable tasks (rayloom.data.demo_corpus: add, next, upper,
repeat) the way the eval tasks do: the completion's first line, exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rayloom.errors import UserError

RewardFn = Callable[..., list[float]]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


def exact_match(*, completions: list[str], answers: list[str], **_) -> list[float]:
    """1.0 when the completion's first line is the answer exactly (case included), else 0.0."""
    return [float(_first_line(c) == a.strip()) for c, a in zip(completions, answers, strict=True)]


def numeric_match(*, completions: list[str], answers: list[str], **_) -> list[float]:
    """1.0 when the first number in the completion equals the numeric answer; 0.0 otherwise (also
    when the answer is not a number)."""
    rewards = []
    for completion, answer in zip(completions, answers, strict=True):
        found = _NUMBER.search(completion)
        try:
            rewards.append(float(found is not None and float(found.group()) == float(answer.strip())))
        except ValueError:
            rewards.append(0.0)
    return rewards


def format_reward(*, completions: list[str], finished: list[bool], **_) -> list[float]:
    """0.2 for a completion that is one non-empty line and ends its turn (the demo's answer shape)."""
    return [0.2 * float(done and bool(c.strip()) and "\n" not in c.strip())
            for c, done in zip(completions, finished, strict=True)]


def digit_share(*, completions: list[str], **_) -> list[float]:
    """Share of the completion's non-space characters that are digits: a dense shaping reward for the
    numeric tasks (add, next), and one a random-weight model can climb in a few steps (the tests'
    learnable task)."""
    rewards = []
    for completion in completions:
        chars = [ch for ch in completion if not ch.isspace()]
        rewards.append(sum(ch.isdigit() for ch in chars) / len(chars) if chars else 0.0)
    return rewards


def resolve_rewards(names: list[str]) -> list[RewardFn]:
    """The functions named in config; a name that does not resolve is a config error."""
    from hydra.utils import get_method

    functions = []
    for name in names:
        try:
            functions.append(get_method(name))
        except Exception as error:  # hydra wraps import and attribute errors alike
            raise UserError(f"invalid config value objective.grpo.rewards: {name!r} is not an importable "
                            f"function ({error})") from None
    return functions


def score(functions: list[RewardFn], weights: list[float], *, prompts: list[str], completions: list[str],
          answers: list[str], finished: list[bool]) -> tuple[list[float], dict[str, list[float]]]:
    """(weighted sum per completion, each function's own rewards by name)."""
    weights = weights or [1.0] * len(functions)
    per_function: dict[str, list[float]] = {}
    total = [0.0] * len(completions)
    for fn, weight in zip(functions, weights, strict=True):
        values = [float(v) for v in fn(prompts=prompts, completions=completions, answers=answers, finished=finished)]
        if len(values) != len(completions):
            raise ValueError(f"reward function {fn.__name__} returned {len(values)} rewards for "
                             f"{len(completions)} completions")
        per_function[fn.__name__] = values
        total = [t + weight * v for t, v in zip(total, values, strict=True)]
    return total, per_function
