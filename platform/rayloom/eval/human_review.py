"""Human assessment: export a blinded, shuffled sample for raters; import their scores; report agreement.

Export (`export_review`) writes, into one folder:
  items.jsonl / items.csv   what raters see: item_id, task, prompt, reference, response, and an
                            empty `score` (and `comment`) to fill in. No system names, random ids,
                            shuffled, so raters cannot tell which model answered.
  key.json                  the private key: item_id -> system, task, example id. Keep it from raters.
  README.md                 instructions and the score scale.
When several systems are exported (e.g. base and fine-tuned), the same examples are sampled for
each, so their answers are compared on equal prompts.

Import (`import_reviews`) reads each rater's file (JSONL or CSV with item_id and score; the rater
is the `rater` column or the file name) and reports per-system mean scores and inter-rater
agreement: Cohen's kappa for every pair of raters (on the items both rated) and Fleiss' kappa over
the items that every rater scored.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import uuid
from pathlib import Path

from rayloom import storage
from rayloom.errors import UserError
from rayloom.eval import metrics as M
from rayloom.eval.kappa import cohens_kappa, fleiss_kappa

ITEM_FIELDS = ("item_id", "task", "prompt", "reference", "response", "score", "comment")
REVIEW_KINDS = ("generate", "refusal")


def export_review(systems: dict[str, dict[str, list[dict]]], out_dir: str, *, num_items: int, seed: int = 0,
                  formats: tuple[str, ...] | list[str] = ("jsonl", "csv"), scale: tuple[int, int] = (1, 5)) -> dict:
    """Write a blinded sample. `systems`: system name -> {task -> prediction records}."""
    if not systems:
        raise UserError("human review export: no system outputs to sample from")
    rng = random.Random(seed)
    # Example ids every system answered, per task; sampled once, shared by all systems.
    shared: dict[str, list[str]] = {}
    for task in sorted(set.intersection(*(set(tasks) for tasks in systems.values()))):
        ids = set.intersection(*({p["id"] for p in s[task] if "response" in p} for s in systems.values()))
        if ids:
            shared[task] = sorted(ids)
    if not shared:
        raise UserError("human review export: the systems share no generation task with responses")
    pool = [(task, ex) for task, ids in shared.items() for ex in ids]
    picked = rng.sample(pool, min(num_items, len(pool)))
    items, key = [], {}
    for system, tasks in systems.items():
        by_id = {task: {p["id"]: p for p in preds} for task, preds in tasks.items()}
        for task, example_id in picked:
            record = by_id[task][example_id]
            item_id = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
            reference = record.get("reference", "")
            items.append({"item_id": item_id, "task": task, "prompt": record.get("prompt", ""),
                          "reference": " | ".join(reference) if isinstance(reference, list) else str(reference),
                          "response": record.get("response", ""), "score": "", "comment": ""})
            key[item_id] = {"system": system, "task": task, "example_id": example_id}
    rng.shuffle(items)
    files = {}
    if "jsonl" in formats:
        files["jsonl"] = storage.join(out_dir, "items.jsonl")
        storage.write_text(files["jsonl"], "".join(json.dumps(item) + "\n" for item in items))
    if "csv" in formats:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ITEM_FIELDS)
        writer.writeheader()
        writer.writerows(items)
        files["csv"] = storage.join(out_dir, "items.csv")
        storage.write_text(files["csv"], buffer.getvalue())
    meta = {"systems": sorted(systems), "num_items": len(items), "scale": list(scale), "key": key}
    storage.write_text(storage.join(out_dir, "key.json"), json.dumps(meta, indent=2))
    storage.write_text(storage.join(out_dir, "README.md"), _instructions(scale, len(items)))
    return {"dir": out_dir, "num_items": len(items), "files": files}


def _instructions(scale: tuple[int, int], count: int) -> str:
    low, high = scale
    return (f"# Human review\n\n{count} items, shuffled; the answering system is hidden.\n\n"
            f"Fill in `score` for every item with a whole number from {low} (useless or wrong) to {high} "
            "(correct and helpful); `comment` is optional. Return the file (items.jsonl or items.csv) "
            "named after yourself, e.g. `alice.csv`, or add a `rater` column.\n\n"
            "Do not open key.json: it says which system wrote each answer.\n")


def _read_ratings(uri: str, scale: tuple[int, int]) -> tuple[str, dict[str, int], int]:
    """(rater, item_id -> score, number of items left blank) from a rater's JSONL or CSV file."""
    if not storage.exists(uri):
        raise UserError(f"ratings file {uri} does not exist")
    text = storage.read_text(uri)
    name = Path(uri).stem
    if uri.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"ratings file {uri} line {number} is not JSON") from None
    scores, blank, rater = {}, 0, name
    for number, row in enumerate(rows, start=1):
        if "item_id" not in row or "score" not in row:
            raise UserError(f"ratings file {uri} row {number}: needs item_id and score")
        rater = str(row.get("rater") or rater)
        value = row["score"]
        if value in ("", None):
            blank += 1
            continue
        try:
            score = int(float(value))
        except (TypeError, ValueError):
            raise UserError(f"ratings file {uri} row {number}: score {value!r} is not a number") from None
        if not scale[0] <= score <= scale[1] or float(value) != score:
            raise UserError(f"ratings file {uri} row {number}: score {value!r} is not a whole number in "
                            f"[{scale[0]}, {scale[1]}]")
        scores[str(row["item_id"])] = score
    return rater, scores, blank


def import_reviews(key_dir: str, rating_files: list[str], kappa_weights: str = "quadratic") -> dict:
    """Per-system mean scores and inter-rater agreement; also written to key_dir/review_report.{json,md}."""
    key_uri = storage.join(key_dir, "key.json")
    if not storage.exists(key_uri):
        raise UserError(f"no key.json in {key_dir}: point eval.human_review.key at the export folder")
    meta = json.loads(storage.read_text(key_uri))
    key, scale = meta["key"], tuple(meta["scale"])
    raters: dict[str, dict[str, int]] = {}
    blanks = 0
    for uri in rating_files:
        rater, scores, blank = _read_ratings(uri, scale)
        unknown = sorted(set(scores) - set(key))
        if unknown:
            raise UserError(f"ratings file {uri}: item ids not in this export: {unknown[:5]}")
        if rater in raters:
            raise UserError(f"ratings file {uri}: rater {rater!r} appears twice (name files per rater)")
        raters[rater] = scores
        blanks += blank
    report = summarize(key, raters, scale, kappa_weights)
    report["num_blank"] = blanks
    storage.write_text(storage.join(key_dir, "review_report.json"), json.dumps(report, indent=2))
    storage.write_text(storage.join(key_dir, "review_report.md"), review_markdown(report))
    return report


def summarize(key: dict[str, dict], raters: dict[str, dict[str, int]], scale: tuple[int, int],
              kappa_weights: str = "quadratic") -> dict:
    categories = list(range(scale[0], scale[1] + 1))
    systems: dict[str, list[float]] = {}
    per_rater: dict[str, dict[str, float]] = {}
    for rater, scores in raters.items():
        by_system: dict[str, list[float]] = {}
        for item, score in scores.items():
            by_system.setdefault(key[item]["system"], []).append(score)
            systems.setdefault(key[item]["system"], []).append(score)
        per_rater[rater] = {system: M.mean(values) for system, values in sorted(by_system.items())}
    pairs = {}
    for a, b in itertools.combinations(sorted(raters), 2):
        common = sorted(set(raters[a]) & set(raters[b]))
        if common:
            pairs[f"{a}~{b}"] = {
                "items": len(common),
                "kappa": cohens_kappa([raters[a][i] for i in common], [raters[b][i] for i in common],
                                      categories, kappa_weights)}
    everyone = sorted(set.intersection(*(set(s) for s in raters.values()))) if len(raters) >= 2 else []
    fleiss = None
    if everyone:
        table = [[sum(1 for r in raters.values() if r[item] == c) for c in categories] for item in everyone]
        fleiss = fleiss_kappa(table)
    kappas = [p["kappa"] for p in pairs.values()]
    return {
        "raters": sorted(raters),
        "systems": {s: {"mean": M.mean(v), "stderr": M.stderr(v), "num_ratings": len(v)}
                    for s, v in sorted(systems.items())},
        "per_rater": per_rater,
        "cohen_kappa": {"weights": kappa_weights, "pairs": pairs, "mean": M.mean(kappas) if kappas else None},
        "fleiss_kappa": {"items": len(everyone), "kappa": fleiss},
    }


def review_markdown(report: dict) -> str:
    lines = ["# Human review", "", f"Raters: {', '.join(report['raters'])}", "",
             "| system | mean score | stderr | ratings |", "|---|---:|---:|---:|"]
    for system, s in report["systems"].items():
        lines.append(f"| {system} | {s['mean']:.3f} | {s['stderr']:.3f} | {s['num_ratings']} |")
    cohen = report["cohen_kappa"]
    lines += ["", f"Cohen's kappa ({cohen['weights']} weights), per pair of raters:", "",
              "| raters | items | kappa |", "|---|---:|---:|"]
    for pair, p in cohen["pairs"].items():
        lines.append(f"| {pair} | {p['items']} | {p['kappa']:.3f} |")
    fleiss = report["fleiss_kappa"]
    if fleiss["kappa"] is not None:
        lines += ["", f"Fleiss' kappa over the {fleiss['items']} items every rater scored: {fleiss['kappa']:.3f}"]
    return "\n".join(lines) + "\n"
