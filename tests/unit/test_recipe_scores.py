"""The demo's scoreboard: each stage's goal is met, NOT met or not measured, from the numbers."""

from __future__ import annotations

import pytest

from rayloom.recipes.demo_scores import GOALS, Scoreboard, StageScore


def _score(em: float, ppl: float, pref: float | None = None) -> StageScore:
    return StageScore({"add": em, "next": em, "upper": em, "repeat": em}, ppl, pref)


def test_every_goal_is_checked_against_its_stage_and_baseline():
    board = Scoreboard(losses={"train": (7.6, 5.5)},
                       scores={"train": _score(0.0, 360.0, 0.5), "sft": _score(0.2, 700.0, 0.80),
                               "align": _score(0.2, 700.0, 0.83), "rl": _score(0.35, 690.0, 0.83)})
    results = {r.goal.text: r for r in board.check_goals()}
    assert len(results) == len(GOALS)
    assert results["pre-training loss falls"].met
    assert results["SFT raises held-out exact match"].met
    ppl = results["SFT keeps held-out text perplexity within 2x"]
    assert ppl.met and (ppl.before, ppl.after) == (360.0, 700.0) and "1.94x" in ppl.line()
    dpo = results["DPO raises held-out preference accuracy by >= 0.05"]
    assert dpo.met is False and "NOT met" in dpo.line() and "+0.030" in dpo.line()
    assert results["GRPO raises held-out exact match by >= 0.1 over SFT"].met


def test_a_goal_whose_stage_did_not_run_is_not_measured_never_met():
    board = Scoreboard(losses={"train": (7.6, 5.5)}, scores={"train": _score(0.0, 360.0), "sft": _score(0.1, 1e6)})
    results = {r.goal.stage: r for r in board.check_goals() if r.goal.stage in ("align", "rl")}
    assert results["align"].met is None and results["rl"].met is None
    assert results["rl"].line() == "  [not measured] GRPO raises held-out exact match by >= 0.1 over SFT"
    sft_ppl = next(r for r in board.check_goals() if r.goal.metric == "text_perplexity")
    assert sft_ppl.met is False


def test_a_rise_goal_beyond_a_bounded_score_says_it_is_out_of_reach():
    board = Scoreboard(scores={"sft": _score(0.13, 660.0, 0.955), "align": _score(0.13, 660.0, 0.955)})
    dpo = next(r for r in board.check_goals() if r.goal.stage == "align")
    assert dpo.met is False and dpo.line().endswith("out of reach: 0.955 leaves at most +0.045 below 1.0")
    board.scores["sft"] = board.scores["align"] = _score(0.13, 660.0, 0.90)   # reachable: a plain NOT met
    dpo = next(r for r in board.check_goals() if r.goal.stage == "align")
    assert dpo.met is False and "out of reach" not in dpo.line()


def test_table_shows_each_stage_as_a_column():
    board = Scoreboard(scores={"train": _score(0.0, 362.5), "sft": _score(0.25, 400.0, 0.9)})
    lines = board.table().splitlines()
    assert lines[0].split() == ["held-out", "train", "sft"]
    assert any(line.split()[:3] == ["mean", "exact_match", "0.000"] for line in lines)
    assert lines[-1].split() == ["preference", "accuracy", "-", "0.900"]


def test_scores_on_a_real_model(tiny_model_dir):
    from rayloom.data.demo_corpus import demo_eval_examples
    from rayloom.recipes.demo_scores import held_out_texts, score_model

    examples = demo_eval_examples(8, 0)
    score = score_model(tiny_model_dir, examples, held_out_texts()[:2])
    assert set(score.exact_match) == {"add", "next", "upper", "repeat"}
    assert score.mean_exact_match == pytest.approx(0.0)   # random weights
    assert 10 < score.text_perplexity < 10_000             # about the vocabulary size: random weights
