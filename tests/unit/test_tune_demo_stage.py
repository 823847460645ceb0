"""The demo's sweep stage: off unless run.tune=true, skips without shards, and its sweep config is
valid and demo-sized."""

from __future__ import annotations

from rayloom.config import compose
from rayloom.demo import DemoState
from rayloom.tune.demo_stage import demo_tune_config, stage_tune


def test_stage_is_off_unless_asked_and_skips_without_data(capsys):
    stage_tune(compose("run", ["model=tiny-2l"]), DemoState())
    assert "run.tune=false" in capsys.readouterr().out
    stage_tune(compose("run", ["model=tiny-2l", "run.tune=true"]), DemoState())
    assert "no pre-training shards" in capsys.readouterr().out


def test_demo_sweep_config_is_small_and_valid():
    from rayloom.tune.sweep import check_space_values

    cfg = demo_tune_config(compose("run", ["model=tiny-2l", "run.tune=true"]))
    assert cfg.tune.scheduler == "asha" and cfg.tune.num_samples == 4 and cfg.train.num_workers == 1
    assert cfg.train.max_steps % cfg.tune.num_reports == 0 and cfg.objective.name == "clm"
    check_space_values(cfg)
