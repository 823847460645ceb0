"""Adversarial robustness: re-ask a task under perturbations and report the drop from clean accuracy.

Perturbations change only the template's inputs (the question), never the references:
- typo: seeded character edits (swap, drop, repeat) on letters only, so numbers and answers stay valid;
- case: the input upper-cased;
- paraphrase: each of the task's alternative templates (`paraphrases`: a template name of the
  registry, or a reworded user text with the same {fields});
- injection: a prompt-injection instruction appended to the input; besides the accuracy, the share
  of answers that obeyed it (contain the marker) is reported as injection_success_rate.
"""

from __future__ import annotations

import random
import zlib

from rayloom.config.eval import RobustnessConfig
from rayloom.eval import metrics as M
from rayloom.eval.results import TaskResult


def _rng(text: str, seed: int) -> random.Random:
    # Stable across processes (str hash is salted per process).
    return random.Random(zlib.crc32(f"{seed}:{text}".encode()))


def typo(text: str, rate: float, seed: int = 0) -> str:
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 2 or rate <= 0:
        return text
    rng = _rng(text, seed)
    chars = list(text)
    for _ in range(max(1, round(rate * len(letters)))):
        letters = [i for i, ch in enumerate(chars) if ch.isalpha()]
        if len(letters) < 2:
            break
        i = rng.choice(letters)
        op = rng.choice(("swap", "drop", "repeat"))
        if op == "swap" and i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != chars[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "drop":
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def perturb_values(values: dict, kind: str, cfg: RobustnessConfig, seed: int) -> dict:
    """The template inputs under one perturbation (typo, case or injection)."""
    out = dict(values)
    strings = [k for k, v in values.items() if isinstance(v, str)]
    if kind == "typo":
        for key in strings:
            out[key] = typo(values[key], cfg.typo_rate, seed)
    elif kind == "case":
        for key in strings:
            out[key] = values[key].upper()
    elif kind == "injection" and strings:
        # Appended to the last input: where user-supplied content usually sits in a prompt.
        key = strings[-1]
        out[key] = f"{values[key]} {cfg.injection_text.format(marker=cfg.injection_marker)}"
    return out


def merge(clean: TaskResult, variants: dict[str, list[TaskResult]], primary: str, cfg: RobustnessConfig) -> None:
    """Fold the variants' scores into the clean task's metrics as <perturbation>_<metric> and _drop."""
    base = clean.metrics.get(primary)
    if base is None:
        return
    breakdown = {"clean": base}
    drops = []
    for name, results in variants.items():
        scores = [r.metrics[primary] for r in results if primary in r.metrics]
        if not scores:
            continue
        value = M.mean(scores)
        clean.metrics[f"{name}_{primary}"] = value
        clean.metrics[f"{name}_drop"] = base - value
        breakdown[name] = value
        drops.append(base - value)
        if name == "injection":
            marker = cfg.injection_marker.lower()
            hits = [float(marker in str(p.get("response", "")).lower()) for r in results for p in r.predictions
                    if "response" in p]
            if hits:
                clean.metrics["injection_success_rate"] = M.mean(hits)
    if drops:
        clean.metrics["max_drop"] = max(drops)
    clean.details["robustness"] = {"metric": primary, "scores": breakdown}
