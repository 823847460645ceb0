"""Adversarial robustness: re-ask a task under perturbations and report the drop from its clean score.

Each perturbation is an lm-eval task of its own ("<task>~typo"), a copy of the clean task whose
prompt (`doc_to_text`) is perturbed; references and choices never change:
- typo: seeded character edits (swap, drop, repeat) on letters only, so numbers and answers stay valid;
- case: the input upper-cased;
- paraphrase: each of the task's alternative prompts (`metadata.paraphrases` in its YAML, jinja
  over the same fields);
- injection: a prompt-injection instruction appended to the input; besides the accuracy, the share
  of answers that obeyed it (contain the marker) is reported as injection_success_rate.
"""

from __future__ import annotations

import random
import zlib

from rayloom.config.eval import RobustnessConfig
from rayloom.errors import UserError
from rayloom.eval import metrics as M
from rayloom.eval.results import TaskResult

ROBUST_OUTPUTS = ("generate_until", "multiple_choice")


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


def perturb_text(text: str, kind: str, cfg: RobustnessConfig, seed: int) -> str:
    """The prompt under one perturbation (typo, case or injection)."""
    if kind == "typo":
        return typo(text, cfg.typo_rate, seed)
    if kind == "case":
        return text.upper()
    if kind == "injection":
        return f"{text} {cfg.injection_text.format(marker=cfg.injection_marker)}"
    return text


def variant_tasks(name: str, task, cfg: RobustnessConfig, seed: int) -> dict:
    """{"<name>~<perturbation>[k]": lm-eval task} for one clean task."""
    from lm_eval.api.task import ConfigurableTask  # here: lm-eval only when a run starts

    output_type = task.config.output_type
    if output_type not in ROBUST_OUTPUTS:
        raise UserError(f"eval.robustness.tasks: {name!r} is a {output_type} task; the robustness probe re-asks "
                        f"{' or '.join(ROBUST_OUTPUTS)} tasks")
    base = task.config.to_dict(keep_callable=True)
    out = {}
    for kind in cfg.perturbations:
        if kind == "paraphrase":
            for k, prompt in enumerate((task.config.metadata or {}).get("paraphrases", [])):
                out[f"{name}~paraphrase{k}"] = ConfigurableTask(config={**base, "task": f"{name}~paraphrase{k}",
                                                                        "doc_to_text": prompt})
            continue

        def doc_to_text(doc, kind=kind):
            return perturb_text(task.doc_to_text(doc), kind, cfg, seed)

        out[f"{name}~{kind}"] = ConfigurableTask(config={**base, "task": f"{name}~{kind}", "doc_to_text": doc_to_text})
    return out


def primary_metric(result: TaskResult) -> str | None:
    for name in ("exact_match", "acc", *result.metrics):
        if name in result.metrics:
            return name
    return None


def fold_variants(results: dict[str, TaskResult], cfg: RobustnessConfig) -> dict[str, TaskResult]:
    """Move each "<task>~<variant>" result into its clean task's metrics; returns the clean results."""
    clean = {name: r for name, r in results.items() if "~" not in name}
    variants: dict[str, dict[str, list[TaskResult]]] = {}
    for name, result in results.items():
        if "~" in name:
            task, variant = name.split("~", 1)
            variants.setdefault(task, {}).setdefault(variant.rstrip("0123456789"), []).append(result)
    for task, by_variant in variants.items():
        primary = primary_metric(clean[task])
        if primary:
            merge(clean[task], by_variant, primary, cfg)
    return clean


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
