"""Sweep results: per-trial summaries, the best trial, a trial table (CSV + Markdown), the loss
curve plot and the best config as a ready-to-use experiment YAML."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from rayloom import storage
from rayloom.config import RayloomConfig, conf_dir
from rayloom.train import RunPaths
from rayloom.train import checkpoints as ckpts
from rayloom.tune.plot import plot_curves

log = logging.getLogger(__name__)

TABLE_CSV = "trials.csv"
TABLE_MD = "trials.md"
PLOT_PNG = "loss_curves.png"
SUMMARY_JSON = "summary.json"
BEST_YAML = "best_experiment.yaml"


@dataclass
class TrialSummary:
    trial_id: str
    status: str  # finished | stopped early | error | interrupted | pending (the last two: an interrupted sweep)
    values: dict[str, Any]  # the trial's values at its last report (PBT may have changed them)
    num_reports: int
    last_step: int
    # Steps the trial's trainer actually ran (its newest checkpoint may be past its last report).
    steps_trained: int
    last_metric: float | None
    best_metric: float | None
    best_step: int | None
    best_checkpoint: str | None
    restored_from: list[str] = field(default_factory=list)  # PBT donors (trial ids)
    curve: list[dict[str, float]] = field(default_factory=list)  # [{step, loss, <metric>}]
    error: str | None = None
    # The trainer run of the trial's last report (a PBT trial starts a new run at each exploit).
    run_name: str | None = None


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    metric: str
    mode: str
    trials: list[TrialSummary]
    best_trial: str | None
    best_values: dict[str, Any]
    best_metric: float | None
    best_step: int | None
    best_checkpoint: str | None
    best_config_path: str | None
    table_path: str
    plot_path: str | None
    interrupted: bool
    resumed: bool

    @property
    def total_steps(self) -> int:
        """Compute used, in trial-steps (optimizer steps summed over every trial)."""
        return sum(t.steps_trained for t in self.trials)

    def render(self) -> str:
        lines = [f"sweep {self.name}: {len(self.trials)} trial(s) in {self.sweep_dir}"
                 + (" (resumed)" if self.resumed else "")]
        lines.append(markdown_table(self))
        if self.best_trial is not None:
            lines.append(f"best: trial {self.best_trial} {self.metric}={self.best_metric:.4f} at step {self.best_step} "
                         f"with {json.dumps(self.best_values)}")
            lines.append(f"  checkpoint: {self.best_checkpoint}")
            lines.append(f"  config: {self.best_config_path}")
        if self.plot_path:
            lines.append(f"  plot: {self.plot_path}")
        lines.append(f"  compute: {self.total_steps} trial-steps")
        if self.interrupted:
            lines.append("the sweep was interrupted: rerun the same command (same tune.name) to resume it")
        return "\n".join(lines)


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def _trial_status(trial, num_reports: int) -> str:
    """From Tune's own record: a trial Tune finished or stopped has `done` in its last result; one
    without it was cut off by an interrupted sweep."""
    status = getattr(trial, "status", "TERMINATED")
    if status == "ERROR":
        return "error"
    last = getattr(trial, "last_result", None) or {}
    if status in ("PENDING", "RUNNING", "PAUSED") or not last.get("done"):
        return "interrupted" if last else "pending"
    return "finished" if int(last.get("training_iteration", 0)) >= num_reports else "stopped early"


def _summarize_trial(trial, result, cfg: RayloomConfig) -> TrialSummary:
    metric, mode = cfg.tune.metric, cfg.tune.mode
    frame = result.metrics_dataframe if result is not None else None
    rows = frame.to_dict("records") if frame is not None and len(frame) else []
    # A restored trial (resumed sweep, PBT exploit) reports its steps after the restore point
    # again; Tune's log keeps both copies, the later one is the trial's history.
    latest = {int(row["step"]): row for row in rows if "step" in row}
    rows = [latest[step] for step in sorted(latest)] if latest else rows
    curve, best, restored = [], None, []
    for row in rows:
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        curve.append({"step": int(row["step"]), "loss": float(row.get("loss", float("nan"))), metric: float(value),
                      "lr": float(row.get("lr", float("nan"))),
                      "values": json.loads(row["values"]) if row.get("values") else {},
                      "restored_from": row.get("restored_from") if isinstance(row.get("restored_from"), str) else None})
        if best is None or _better(float(value), best[metric], mode):
            best = {**row, metric: float(value)}
        donor = row.get("restored_from")
        if isinstance(donor, str) and donor not in ("self", "") and donor not in restored:
            restored.append(donor)
    last = rows[-1] if rows else {}
    values = json.loads(last["values"]) if last.get("values") else dict(getattr(trial, "config", {}) or {})
    steps_trained = int(last.get("step", 0))
    run_name = last.get("run_name")
    if run_name:
        newest = ckpts.list_checkpoints(RunPaths.of(cfg, run_name).run_dir)
        if newest:
            steps_trained = max(steps_trained, newest[-1][0])
    error = None
    if result is not None and result.error is not None:
        error = f"{type(result.error).__name__}: {str(result.error).splitlines()[0] if str(result.error) else ''}"
    return TrialSummary(
        trial_id=str(getattr(trial, "trial_id", last.get("trial_id", "?"))),
        status=_trial_status(trial, cfg.tune.num_reports),
        values=values, num_reports=len(curve), last_step=int(last.get("step", 0)), steps_trained=steps_trained,
        last_metric=curve[-1][metric] if curve else None, best_metric=best[metric] if best else None,
        best_step=int(best["step"]) if best else None, best_checkpoint=best.get("checkpoint") if best else None,
        restored_from=restored, curve=curve, error=error, run_name=run_name)


def expected_trials(cfg: RayloomConfig) -> int:
    """Trials a complete sweep has: num_samples times the grid (grid values; every choice with
    search_alg=grid)."""
    size = 1
    for spec in cfg.tune.space.values():
        if spec["type"] == "grid" or (spec["type"] == "choice" and cfg.tune.search_alg == "grid"):
            size *= len(spec["values"])
    return cfg.tune.num_samples * (size if cfg.tune.search_alg != "optuna" else 1)


def summarize_sweep(cfg: RayloomConfig, grid, directory: str, resumed: bool = False) -> SweepResult:
    """Collect the trials of a finished (or interrupted) sweep and write its result files."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    # ResultGrid has no per-trial status; its ExperimentAnalysis holds the trials themselves.
    trials = list(grid._experiment_analysis.trials)
    by_id = {}
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is None and result.path:
            trial_id = next((t.trial_id for t in trials if t.path == result.path), None)
        by_id[trial_id] = result
    summaries = [_summarize_trial(t, by_id.get(t.trial_id), cfg) for t in trials]
    summaries.sort(key=lambda s: s.trial_id)
    best = None
    for summary in summaries:
        if summary.best_metric is not None and (best is None or _better(summary.best_metric, best.best_metric, mode)):
            best = summary
    interrupted = (any(s.status in ("pending", "interrupted") for s in summaries)
                   or len(summaries) < expected_trials(cfg))
    best_values = {}
    if best is not None:
        best_values = next((json.loads(r["values"]) for r in _rows(by_id.get(best.trial_id))
                            if r.get("step") == best.best_step and r.get("values")), best.values)
    result = SweepResult(
        name=cfg.tune.name, sweep_dir=directory, metric=metric, mode=mode, trials=summaries,
        best_trial=best.trial_id if best else None, best_values=best_values,
        best_metric=best.best_metric if best else None, best_step=best.best_step if best else None,
        best_checkpoint=best.best_checkpoint if best else None, best_config_path=None,
        table_path=storage.join(directory, TABLE_MD), plot_path=None, interrupted=interrupted, resumed=resumed)
    write_results(cfg, result)
    return result


def _rows(result) -> list[dict]:
    frame = result.metrics_dataframe if result is not None else None
    return frame.to_dict("records") if frame is not None and len(frame) else []


def write_results(cfg: RayloomConfig, result: SweepResult) -> None:
    directory = result.sweep_dir
    storage.write_text(storage.join(directory, TABLE_CSV), csv_table(result))
    storage.write_text(storage.join(directory, TABLE_MD), markdown_table(result) + "\n")
    if any(t.curve for t in result.trials):
        result.plot_path = storage.join(directory, PLOT_PNG)
        storage.write_bytes(result.plot_path, plot_curves(result))
    if result.best_trial is not None and not result.interrupted:
        text = best_experiment_yaml(cfg, result)
        result.best_config_path = cfg.tune.best_config_path or storage.join(directory, BEST_YAML)
        storage.write_text(result.best_config_path, text)
        if cfg.tune.write_experiment:
            target = conf_dir() / "experiment" / f"{cfg.tune.name}_best.yaml"
            target.write_text(text)
            log.info("wrote %s (use it with experiment=%s_best)", target, cfg.tune.name)
    summary = {k: v for k, v in result.__dict__.items() if k != "trials"}
    summary["total_steps"] = result.total_steps
    summary["trials"] = [{k: v for k, v in t.__dict__.items() if k != "curve"} for t in result.trials]
    storage.write_text(storage.join(directory, SUMMARY_JSON), json.dumps(summary, indent=2, default=str))


def _columns(result: SweepResult) -> list[str]:
    keys: list[str] = []
    for trial in result.trials:
        keys += [k for k in trial.values if k not in keys]
    return keys


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    keys = _columns(result)
    header = ["trial", "status", *keys, "evals", "steps", f"last {result.metric}", f"best {result.metric}",
              "best step", "restored from", "checkpoint"]
    rows = []
    for t in result.trials:
        mark = " (best)" if t.trial_id == result.best_trial else ""
        rows.append([t.trial_id + mark, t.status, *[_fmt(t.values.get(k)) for k in keys], str(t.num_reports),
                     str(t.steps_trained), _fmt(t.last_metric), _fmt(t.best_metric), _fmt(t.best_step),
                     ", ".join(t.restored_from), t.best_checkpoint or ""])
    return header, rows


def csv_table(result: SweepResult) -> str:
    header, rows = _table_rows(result)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def markdown_table(result: SweepResult) -> str:
    header, rows = _table_rows(result)
    header, rows = header[:-1], [r[:-1] for r in rows]  # checkpoints are in the CSV; too wide here
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in values.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def best_experiment_yaml(cfg: RayloomConfig, result: SweepResult) -> str:
    """The best trial's values as a conf/experiment file (`experiment=<name>`), its checkpoint in a
    comment and the run name pointing at the sweep."""
    values = dict(result.best_values)
    body = _nest(values)
    body.setdefault("train", {})["run_name"] = f"{cfg.tune.name}-best"
    header = [
        "# @package _global_",
        f"# Best trial of sweep {cfg.tune.name!r} ({cfg.tune.scheduler} + {cfg.tune.search_alg}, "
        f"{len(result.trials)} trials): {result.metric}={result.best_metric:.6g} at step {result.best_step}.",
        f"# Trial {result.best_trial}; its checkpoint: {result.best_checkpoint}",
        "# Use: rayloom train experiment=<this file's name> (plus the overrides the sweep ran with).",
    ]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def load_summary(directory: str) -> dict:
    return json.loads(storage.read_text(storage.join(directory, SUMMARY_JSON)))
