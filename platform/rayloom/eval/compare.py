"""Two runs side by side: every metric before and after, the change, and whether it is better.

Used by `rayloom eval eval.mode=compare eval.compare_runs=[a,b]`, by `eval.compare_with=<run>`
after a run, and by the demo's before -> after table (base vs fine-tuned).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from rayloom import storage
from rayloom.eval import plots
from rayloom.eval.metrics import lower_is_better
from rayloom.eval.report import figure_html, fmt, page, table_html


def compare_payloads(before: dict, after: dict) -> list[dict]:
    """One row per metric present in either run, in task order."""
    names = list(dict.fromkeys([*before.get("metrics", {}), *after.get("metrics", {})]))
    rows = []
    for name in names:
        a = before.get("metrics", {}).get(name)
        b = after.get("metrics", {}).get(name)
        delta = None if a is None or b is None or math.isnan(a) or math.isnan(b) else b - a
        if delta is None or abs(delta) < 1e-12:
            verdict = "same" if delta is not None else "-"
        else:
            verdict = "better" if (delta < 0) == lower_is_better(name) else "worse"
        rows.append({"metric": name, "before": a, "after": b, "delta": delta, "verdict": verdict})
    return rows


HEADLINE = {"generate": ("exact_match", "bleu", "chrf", "refusal_rate"), "multiple_choice": ("acc", "likelihood_gap"),
            "perplexity": ("word_perplexity",)}


def headline_metrics(run: dict) -> list[str]:
    """Each task's headline metric ("<task>/<metric>"): its primary score (the demo's before -> after rows)."""
    out = []
    for task, summary in run.get("tasks", {}).items():
        for name in HEADLINE.get(summary.get("kind", ""), ()):
            if name in summary.get("metrics", {}):
                out.append(f"{task}/{name}")
                break
    return out


def format_table(rows: list[dict], labels: tuple[str, str] = ("before", "after"),
                 metrics: list[str] | None = None) -> str:
    """A plain-text table for the terminal (the demo's before -> after table)."""
    rows = [r for r in rows if metrics is None or r["metric"] in metrics]
    width = max([len("metric"), *(len(r["metric"]) for r in rows)])
    cols = (max(8, len(labels[0])), max(8, len(labels[1])))
    lines = [f"{'metric':<{width}}  {labels[0]:>{cols[0]}}  {labels[1]:>{cols[1]}}  {'change':>9}  verdict"]
    for r in rows:
        lines.append(f"{r['metric']:<{width}}  {fmt(r['before']):>{cols[0]}}  {fmt(r['after']):>{cols[1]}}  "
                     f"{_delta(r):>9}  {r['verdict']}")
    return "\n".join(lines)


def _delta(row: dict) -> str:
    delta = row["delta"]
    if delta is None:
        return ""
    return f"{delta:+.4f}" if abs(delta) < 1000 else f"{delta:+.4g}"


def write_comparison(before: dict, after: dict, out_uri: str, labels: tuple[str, str] | None = None) -> dict:
    """compare.json, compare.md and a self-contained compare.html (with a before/after plot) at out_uri."""
    labels = labels or (before["run"], after["run"])
    rows = compare_payloads(before, after)
    with tempfile.TemporaryDirectory(prefix="rayloom-compare-") as tmp:
        local = Path(tmp)
        (local / "plots").mkdir()
        figure = plots.before_after(rows, local / "plots" / "before_after.png", labels)
        summary = {"before": {"run": before["run"], "uri": before.get("uri"), "label": labels[0]},
                   "after": {"run": after["run"], "uri": after.get("uri"), "label": labels[1]}, "rows": rows}
        (local / "compare.json").write_text(json.dumps(summary, indent=2))
        md = [f"# {labels[0]} -> {labels[1]}", "", f"- before: `{before['run']}` ({before.get('uri', '')})",
              f"- after: `{after['run']}` ({after.get('uri', '')})", "",
              f"| metric | {labels[0]} | {labels[1]} | change | verdict |", "|---|---:|---:|---:|---|"]
        md += [f"| {r['metric']} | {fmt(r['before'])} | {fmt(r['after'])} | {_delta(r)} | {r['verdict']} |"
               for r in rows]
        if figure:
            md += ["", "![before/after](plots/before_after.png)"]
        (local / "compare.md").write_text("\n".join(md) + "\n")
        body = (f"<h1>{labels[0]} &rarr; {labels[1]}</h1>"
                + table_html(["metric", labels[0], labels[1], "change", "verdict"],
                             [[r["metric"], fmt(r["before"]), fmt(r["after"]), _delta(r), r["verdict"]]
                              for r in rows],
                             {1, 2, 3})
                + (figure_html("before/after", figure) if figure else ""))
        (local / "compare.html").write_text(page(f"{labels[0]} -> {labels[1]}", body))
        uri = storage.commit_dir(local, out_uri)
    return {"uri": uri, "rows": rows}
