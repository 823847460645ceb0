"""GRPO's reward functions, their resolution from config, prompt/answer split and config checks."""

from __future__ import annotations

import pytest

from rayloom.align.rewards import (
    digit_share,
    exact_match,
    format_reward,
    numeric_match,
    resolve_rewards,
    score,
)
from rayloom.config import compose
from rayloom.errors import UserError


def test_exact_match_grades_the_first_line_like_the_demo_tasks():
    from rayloom.data.demo_corpus import is_correct

    completions = ["26", " 26 \nmore", "26.", "HELLO", "hello", ""]
    answers = ["26", "26", "26", "HELLO", "HELLO", "26"]
    assert exact_match(completions=completions, answers=answers) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert [float(is_correct(a, c)) for a, c in zip(answers, completions, strict=True)] == \
        exact_match(completions=completions, answers=answers)


def test_numeric_match_reads_the_first_number():
    assert numeric_match(completions=["it is 31", "30 or 31", "no", "7"], answers=["31", "31", "5", "word"]) == \
        [1.0, 0.0, 0.0, 0.0]


def test_format_reward_wants_one_finished_line():
    assert format_reward(completions=["26", "26\n27", "", "26"], finished=[True, True, True, False]) == \
        [0.2, 0.0, 0.0, 0.0]


def test_digit_share():
    assert digit_share(completions=["12", "a1", "", " 1 b "]) == [1.0, 0.5, 0.0, 0.5]


def test_score_sums_weighted_rewards_by_name():
    fns = resolve_rewards(["rayloom.align.rewards.exact_match", "rayloom.align.rewards.format_reward"])
    total, per = score(fns, [2.0, 1.0], prompts=["p", "p"], completions=["5", "6"], answers=["5", "5"],
                       finished=[True, False])
    assert total == pytest.approx([2.2, 0.0])
    assert per == {"exact_match": [1.0, 0.0], "format_reward": [0.2, 0.0]}


def test_unknown_reward_is_a_config_error():
    with pytest.raises(UserError, match="objective.grpo.rewards"):
        resolve_rewards(["rayloom.align.rewards.no_such_reward"])


def test_split_prompt_takes_the_labelled_span_as_answer():
    torch = pytest.importorskip("torch")
    from rayloom.align.grpo import split_prompt

    ids = torch.tensor([5, 6, 7, 8, 9, 0, 0])
    labels = torch.tensor([-100, -100, -100, 8, 9, -100, -100])
    assert split_prompt(ids, labels) == ([5, 6, 7], [8, 9])


@pytest.mark.parametrize(("override", "key"), [
    ("objective.grpo.num_generations=1", "objective.grpo.num_generations"),
    ("objective.grpo.placement=remote", "objective.grpo.placement"),
    ("objective.grpo.scale_rewards=rank", "objective.grpo.scale_rewards"),
    ("objective.loss_type=sigmoid", "objective.loss_type"),
    ("objective.grpo.reward_weights=[1.0,2.0,3.0]", "objective.grpo.reward_weights"),
])
def test_bad_grpo_config_names_the_key(override, key):
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        compose("train", ["objective=grpo", override])


def test_tiny_grpo_experiment_composes():
    cfg = compose("train", ["experiment=tiny_grpo"])
    assert cfg.objective.name == "grpo" and cfg.objective.resolved_loss_type == "dapo"
    assert cfg.objective.grpo.kl_coef > 0 and cfg.peft.method == "lora"
