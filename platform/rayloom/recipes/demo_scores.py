"""The demo's stage-by-stage scoreboard: what each stage's model does on held-out data, and
whether each stage reached its goal (issue #18).

Every training stage's model is scored on the driver with plain transformers (the tiny model
takes seconds; no engine start-up), on data no stage trained on:

- exact match per demo task: greedy answers to the held-out prompts (demo_eval_examples),
  graded by the corpus's is_correct - the same rows and grading as the eval stage's lm-eval
  tasks demo_add/demo_next/demo_upper/demo_repeat;
- held-out text perplexity per token: the paragraphs of conf/tasks/heldout_text.jsonl (the
  eval stage's heldout_text task; it reports per word);
- preference accuracy: held-out preference pairs the model ranks right (rayloom.align.measure).

GOALS states each stage's goal as a comparison of two stages' scores; `check_goals` says met or
NOT met with the numbers, and a goal whose stages did not run is "not measured" - the demo never
claims an effect it did not measure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.data.demo_corpus import TASKS


@dataclass
class StageScore:
    exact_match: dict[str, float]          # per demo task
    text_perplexity: float
    preference_accuracy: float | None = None

    @property
    def mean_exact_match(self) -> float:
        return sum(self.exact_match.values()) / max(1, len(self.exact_match))

    def as_dict(self) -> dict:
        return {"exact_match": self.exact_match, "mean_exact_match": self.mean_exact_match,
                "text_perplexity": self.text_perplexity, "preference_accuracy": self.preference_accuracy}


@dataclass(frozen=True)
class Goal:
    stage: str
    text: str
    metric: str            # a StageScore field, or "loss" (the stage's own training loss, first -> last)
    baseline: str          # the stage compared against
    kind: str              # "rise_at_least": after - before >= amount; "ratio_at_most": after / before <= amount;
    amount: float          # "falls": after < before


# Scores that cannot pass 1.0: a rise goal on one of them is out of reach when its baseline is
# already within the goal's amount of 1.0, and the console says so rather than leave a bare NOT met.
_AT_MOST_ONE = ("mean_exact_match", "preference_accuracy")


GOALS = (
    Goal("train", "pre-training loss falls", "loss", "train", "falls", 0.0),
    Goal("sft", "SFT raises held-out exact match", "mean_exact_match", "train", "rise_at_least", 1e-9),
    Goal("sft", "SFT keeps held-out text perplexity within 2x", "text_perplexity", "train", "ratio_at_most", 2.0),
    Goal("align", "DPO raises held-out preference accuracy by >= 0.05", "preference_accuracy", "sft",
         "rise_at_least", 0.05),
    Goal("rl", "GRPO raises held-out exact match by >= 0.1 over SFT", "mean_exact_match", "sft", "rise_at_least", 0.1),
)


@dataclass
class GoalResult:
    goal: Goal
    before: float | None
    after: float | None
    met: bool | None       # None: not measured (a stage did not run)

    def line(self) -> str:
        g = self.goal
        if self.met is None:
            return f"  [not measured] {g.text}"
        change = (f"{self.after / self.before:.2f}x" if g.kind == "ratio_at_most" and self.before
                  else f"{self.after - self.before:+.3f}")
        line = f"  [{'met' if self.met else 'NOT met'}] {g.text}: {self.before:.4g} -> {self.after:.4g} ({change})"
        if not self.met and g.kind == "rise_at_least" and g.metric in _AT_MOST_ONE and self.before + g.amount > 1:
            line += f"; out of reach: {self.before:.4g} leaves at most {1 - self.before:+.3f} below 1.0"
        return line


@dataclass
class Scoreboard:
    """Scores by stage name, in the order the stages ran, plus the training stages' losses."""

    scores: dict[str, StageScore] = field(default_factory=dict)
    losses: dict[str, tuple[float, float]] = field(default_factory=dict)   # stage -> (first, last)

    def value(self, stage: str, metric: str, end: str) -> float | None:
        if metric == "loss":
            pair = self.losses.get(stage)
            return None if pair is None else pair[0 if end == "before" else 1]
        score = self.scores.get(stage)
        return None if score is None else getattr(score, metric)

    def check_goals(self) -> list[GoalResult]:
        results = []
        for goal in GOALS:
            before = self.value(goal.baseline, goal.metric, "before")
            after = self.value(goal.stage, goal.metric, "after")
            if before is None or after is None or (goal.metric != "loss" and goal.stage not in self.scores):
                results.append(GoalResult(goal, before, after, None))
                continue
            if goal.kind == "falls":
                met = after < before
            elif goal.kind == "ratio_at_most":
                met = before > 0 and after / before <= goal.amount
            else:
                met = after - before >= goal.amount
            results.append(GoalResult(goal, before, after, met))
        return results

    def table(self) -> str:
        stages = list(self.scores)
        rows = [(f"{task}/exact_match", [self.scores[s].exact_match.get(task) for s in stages]) for task in TASKS]
        rows += [("mean exact_match", [self.scores[s].mean_exact_match for s in stages]),
                 ("text perplexity/token", [self.scores[s].text_perplexity for s in stages]),
                 ("preference accuracy", [self.scores[s].preference_accuracy for s in stages])]
        width = max(len(name) for name, _ in rows)
        cols = [max(9, len(s)) for s in stages]
        lines = [f"{'held-out':<{width}}  " + "  ".join(f"{s:>{c}}" for s, c in zip(stages, cols, strict=True))]
        for name, values in rows:
            lines.append(f"{name:<{width}}  " + "  ".join(f"{_fmt(v):>{c}}" for v, c in zip(values, cols, strict=True)))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"


def held_out_texts() -> list[str]:
    from rayloom.eval.harness import tasks_dir

    path = Path(tasks_dir()) / "heldout_text.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def text_perplexity(model_dir: str | Path, texts: list[str]) -> float:
    """exp(mean negative log-likelihood per predicted token) over `texts`, each read on its own."""
    import torch

    from rayloom.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"][: model.config.max_position_embeddings]])
            if ids.shape[1] < 2:
                continue
            loss = model(input_ids=ids, labels=ids).loss
            total += float(loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return math.exp(total / count) if count else float("nan")


def exact_match(model_dir: str | Path, examples: list[dict]) -> dict[str, float]:
    """Share of held-out {task, prompt, answer} examples answered right, per task (greedy)."""
    from rayloom.align.measure import generate_answers
    from rayloom.data.demo_corpus import is_correct

    answers = generate_answers(model_dir, [e["prompt"] for e in examples], max_new_tokens=16, batch_size=64)
    by_task: dict[str, list[bool]] = {}
    for example, answer in zip(examples, answers, strict=True):
        by_task.setdefault(example["task"], []).append(is_correct(example["answer"], answer))
    return {task: sum(hits) / len(hits) for task, hits in by_task.items()}


def score_model(model_dir: str | Path, examples: list[dict], texts: list[str],
                preference_rows: list[dict] | None = None) -> StageScore:
    from rayloom.align.measure import preference_accuracy

    pref = preference_accuracy(model_dir, preference_rows).accuracy if preference_rows else None
    return StageScore(exact_match(model_dir, examples), text_perplexity(model_dir, texts), pref)
