"""One report per run: report.md and a self-contained report.html (plots embedded), from metrics.json.

Reports are rebuilt from the payload alone, so an old run's report can be regenerated and two
runs compared (rayloom.eval.compare) without the models.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from rayloom.eval import plots
from rayloom.eval.metrics import lower_is_better


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.4f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _make_plots(payload: dict, out: Path) -> list[tuple[str, Path]]:
    """(caption, path) of every figure for this run, written under out/plots."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    bars = plots.metric_bars(payload["metrics"], folder / "metrics.png", f"Run {payload['run']}")
    if bars:
        figures.append(("Task metrics", bars))
    for task, summary in payload["tasks"].items():
        details = summary.get("details", {})
        safe = task.replace("/", "_").replace(":", "_")
        if details.get("calibration"):
            path = plots.calibration(task, details["calibration"], folder / f"calibration_{safe}.png")
            if path:
                figures.append((f"Calibration of {task} (ECE {fmt(summary['metrics'].get('ece'))})", path))
        if details.get("robustness"):
            rob = details["robustness"]
            path = plots.breakdown(f"{task}: {rob['metric']} under perturbations", rob["scores"],
                                   folder / f"robustness_{safe}.png", rob["metric"])
            if path:
                figures.append((f"Robustness of {task}", path))
        if details.get("per_category") and summary["kind"] == "bias":
            path = plots.breakdown(f"{task}: {details['measure']} per category", details["per_category"],
                                   folder / f"bias_{safe}.png", details["measure"])
            if path:
                figures.append((f"Bias gaps of {task}", path))
    return figures


def _metric_rows(payload: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for task, summary in payload["tasks"].items():
        for name, value in summary["metrics"].items():
            err = summary.get("stderr", {}).get(name)
            rows.append((task, name, fmt(value), fmt(err) if err is not None else "",
                         "lower" if lower_is_better(name) else "higher"))
    return rows


def markdown(payload: dict, figures: list[tuple[str, Path]], out: Path) -> str:
    model = payload.get("model", {})
    lines = [f"# Evaluation report: {payload['run']}", "",
             f"- model: `{model.get('name', '')}` ({model.get('path', '')})",
             f"- target: {payload['target']['kind']}" + (f" at {payload['target'].get('endpoint_url')}"
                                                          if payload['target'].get('endpoint_url') else ""),
             f"- created: {payload['created']}", ""]
    gate = payload.get("gate")
    if gate:
        state = "PASSED" if gate["passed"] else "FAILED"
        lines += [f"**Deploy gate: {state}** ({len(gate['checked'])} metric(s) checked)", ""]
        for failure in gate["failures"]:
            value = "missing" if failure["value"] is None else fmt(failure["value"])
            lines.append(f"- {failure['metric']} = {value}, needs {failure['op']} {fmt(failure['threshold'])}")
        lines.append("")
    lines += ["## Tasks", "", "| task | kind | examples | errors | description |", "|---|---|---:|---:|---|"]
    for task, s in payload["tasks"].items():
        lines.append(f"| {task} | {s['kind']} | {s['num_examples']} | {s['num_errors']} | {s.get('description', '')} |")
    lines += ["", "## Metrics", "", "| task | metric | value | stderr | better |", "|---|---|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in _metric_rows(payload)]
    if payload.get("human_review"):
        review = payload["human_review"]
        lines += ["", "## Human review", "", f"A blinded sample of {review['num_items']} items was exported to "
                  f"`{review['dir']}` (send items.csv / items.jsonl to raters; keep key.json)."]
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{caption}]({path.relative_to(out).as_posix()})" for caption, path in figures]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#1a7f37}.fail{color:#cf222e}"
        "img{max-width:100%;margin:0.5em 0}figure{display:inline-block;margin:0.5em}")


def table_html(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{html.escape(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure_html(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def _html_report(payload: dict, figures: list[tuple[str, Path]]) -> str:
    model = payload.get("model", {})
    parts = [f"<h1>Evaluation report: {html.escape(payload['run'])}</h1>",
             f"<p>model <code>{html.escape(str(model.get('name', '')))}</code> ({html.escape(str(model.get('path', '')))})"
             f"; target {html.escape(payload['target']['kind'])}; created {html.escape(payload['created'])}</p>"]
    gate = payload.get("gate")
    if gate:
        css = "pass" if gate["passed"] else "fail"
        parts.append(f"<h2 class={css}>Deploy gate: {'PASSED' if gate['passed'] else 'FAILED'}</h2>")
        if gate["failures"]:
            parts.append(table_html(["metric", "value", "needs"], [
                [f["metric"], "missing" if f["value"] is None else fmt(f["value"]), f"{f['op']} {fmt(f['threshold'])}"]
                for f in gate["failures"]], {1}))
    parts.append("<h2>Tasks</h2>" + table_html(
        ["task", "kind", "examples", "errors", "description"],
        [[t, s["kind"], s["num_examples"], s["num_errors"], s.get("description", "")]
         for t, s in payload["tasks"].items()], {2, 3}))
    parts.append("<h2>Metrics</h2>" + table_html(["task", "metric", "value", "stderr", "better"],
                                                 [list(r) for r in _metric_rows(payload)], {2, 3}))
    if figures:
        parts.append("<h2>Plots</h2>" + "".join(figure_html(c, p) for c, p in figures))
    return page(f"rayloom eval {payload['run']}", "".join(parts))


def write_report(payload: dict, out: Path, with_plots: bool = True) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = _make_plots(payload, out) if with_plots else []
    (out / "report.md").write_text(markdown(payload, figures, out))
    (out / "report.html").write_text(_html_report(payload, figures))
    return {"markdown": out / "report.md", "html": out / "report.html"}
