"""Sweep result files built from trial summaries: the table, the plot and the best experiment YAML
(which composes as a conf/experiment file)."""

from __future__ import annotations

import csv
import io
import shutil

import yaml

from rayloom.config import compose
from rayloom.tune.plot import plot_curves
from rayloom.tune.results import SweepResult, TrialSummary, best_experiment_yaml, csv_table, markdown_table


def _result(tmp_path) -> SweepResult:
    def trial(tid, lr, status, vals):
        curve = [{"step": 2 * (i + 1), "loss": v + 0.1, "val_loss": v} for i, v in enumerate(vals)]
        return TrialSummary(trial_id=tid, status=status, values={"train.lr": lr, "peft.r": 8}, num_reports=len(vals),
                            last_step=2 * len(vals), steps_trained=2 * len(vals), last_metric=vals[-1],
                            best_metric=min(vals), best_step=2 * (vals.index(min(vals)) + 1),
                            best_checkpoint=f"/ckpt/{tid}", curve=curve)

    trials = [trial("t0", 3e-3, "finished", [5.0, 4.0, 3.5, 3.2]), trial("t1", 1e-6, "stopped early", [6.2])]
    return SweepResult(name="s", sweep_dir=str(tmp_path), metric="val_loss", mode="min", trials=trials,
                       best_trial="t0", best_values={"train.lr": 3e-3, "peft.r": 8}, best_metric=3.2, best_step=8,
                       best_checkpoint="/ckpt/t0", best_config_path=None, table_path="", plot_path=None,
                       interrupted=False, resumed=False)


def test_table_plot_and_totals(tmp_path):
    result = _result(tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_table(result))))
    assert [r["status"] for r in rows] == ["finished", "stopped early"]
    assert rows[0]["trial"] == "t0 (best)" and rows[0]["train.lr"] == "0.003" and rows[0]["checkpoint"] == "/ckpt/t0"
    assert "| t1 | stopped early |" in markdown_table(result)
    assert result.total_steps == 10
    assert plot_curves(result)[:4] == b"\x89PNG"
    assert "best: trial t0 val_loss=3.2000 at step 8" in result.render()


def test_best_experiment_yaml_composes_as_an_experiment(tmp_path, monkeypatch):
    result = _result(tmp_path)
    cfg = compose("tune", ["tune.name=s"])
    text = best_experiment_yaml(cfg, result)
    assert text.startswith("# @package _global_") and "/ckpt/t0" in text
    assert yaml.safe_load(text) == {"train": {"lr": 3e-3, "run_name": "s-best"}, "peft": {"r": 8}}
    # Dropped into a copy of the config tree, it is a working `experiment=` choice.
    from rayloom.config.compose import conf_dir

    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "experiment" / "s_best.yaml").write_text(text)
    monkeypatch.setenv("RAYLOOM_CONF_DIR", str(conf))
    trained = compose("train", ["experiment=s_best"])
    assert trained.train.lr == 3e-3 and trained.peft.r == 8 and trained.train.run_name == "s-best"
