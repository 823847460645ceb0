"""Search spaces: validated against the typed schema while composing (a bad path or value fails
naming it), turned into Ray Tune domains, and applied to a config for one trial."""

from __future__ import annotations

import dataclasses

import pytest

from rayloom.config import RayloomConfig, TuneConfig, compose
from rayloom.config.search_space import check_space_paths, check_space_specs, flatten_space
from rayloom.errors import UserError
from rayloom.tune.space import apply_overrides, build_mutations, build_param_space


def test_presets_compose_with_flat_dotted_paths():
    for preset in ("asha", "pbt", "grid", "random", "lora"):
        cfg = compose("tune", [f"tune={preset}"])
        assert cfg.tune.space and all("." in path for path in cfg.tune.space), preset
    assert compose("tune", ["tune=pbt"]).tune.scheduler == "pbt"


def test_command_line_adds_replaces_and_edits_space_keys():
    cfg = compose("tune", ["+tune.space.peft.r={type: choice, values: [4, 8]}", "tune.space.train.lr.low=0.001",
                           "~tune.space.train.warmup_steps"])
    assert cfg.tune.space == {"train.lr": {"type": "loguniform", "low": 0.001, "high": 0.01},
                              "peft.r": {"type": "choice", "values": [4, 8]}}


@pytest.mark.parametrize("override, named", [
    ("+tune.space.train.lrr={type: choice, values: [1]}", "tune.space.train.lrr"),
    ("+tune.space.modle.x={type: choice, values: [1]}", "tune.space.modle.x"),
    ("+tune.space.train.lr.low.x={type: choice, values: [1]}", "tune.space.train.lr"),
    ("+tune.space.train.lr2={type: choice, values: [1]}", "no key 'lr2'"),
])
def test_a_path_that_does_not_exist_fails_at_compose_time_naming_it(override, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        compose("tune", [override])


@pytest.mark.parametrize("space, message", [
    ({"train.lr": {"type": "choice", "values": ["fast"]}}, "of type float"),
    ({"train.lr": {"type": "loguniform", "low": 0.0, "high": 1.0}}, "low > 0"),
    ({"train.lr": {"type": "uniform", "low": 1.0, "high": 0.5}}, "must be < high"),
    ({"train.lr": {"type": "normal", "low": 1.0, "high": 2.0}}, "unknown type 'normal'"),
    ({"train.lr": {"type": "uniform", "low": 1.0}}, "missing"),
    ({"train.warmup_steps": {"type": "uniform", "low": 0, "high": 10}}, "integer key"),
    ({"tune.num_samples": {"type": "choice", "values": [1, 2]}}, "cannot be tuned"),
    ({"train.run_name": {"type": "choice", "values": ["a"]}}, "sets train.run_name"),
    ({"peft": {"type": "choice", "values": [1]}}, "whole peft group"),
    ({"train.lr": 0.1}, "expected a mapping"),
])
def test_bad_specs_fail_naming_the_key(space, message):
    with pytest.raises(UserError, match=message):
        check_space_specs(space)
        check_space_paths(space, RayloomConfig)


def test_a_bad_path_fails_when_the_root_config_is_built():
    tune = TuneConfig(space={"train.lrr": {"type": "choice", "values": [0.1]}})  # the tune group cannot know
    with pytest.raises(UserError, match=r"tune\.space\.train\.lrr: train has no key 'lrr'"):
        RayloomConfig(tune=tune)


def test_grid_search_needs_discrete_values_and_pbt_needs_a_space():
    with pytest.raises(UserError, match="search_alg=grid"):
        TuneConfig(space={"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, search_alg="grid")
    with pytest.raises(UserError, match="PBT needs"):
        TuneConfig(space={}, scheduler="pbt")
    with pytest.raises(UserError, match="tune.grace_period"):
        TuneConfig(grace_period=5, num_reports=4)


def test_domains_and_mutations():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = flatten_space({"train": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                                     "warmup_steps": {"type": "randint", "low": 0, "high": 10}},
                           "peft.r": {"type": "choice", "values": [4, 8]},
                           "objective.beta": {"type": "grid", "values": [0.1, 0.5]}})
    domains = build_param_space(space, "random")
    assert isinstance(domains["train.lr"], Float) and isinstance(domains["peft.r"], Categorical)
    assert isinstance(domains["train.warmup_steps"], Integer) and domains["train.warmup_steps"].upper == 11
    assert domains["objective.beta"] == {"grid_search": [0.1, 0.5]}
    assert build_param_space({"peft.r": space["peft.r"]}, "grid")["peft.r"] == {"grid_search": [4, 8]}
    mutations = build_mutations(space)
    assert mutations["peft.r"] == [4, 8] and isinstance(mutations["train.lr"], Float)


def test_apply_overrides_validates_through_the_schemas():
    cfg = compose("tune", ["model=tiny-2l"])
    trial = apply_overrides(cfg, {"train.lr": 3e-3, "peft.r": 16, "objective.beta": 1})
    assert trial.train.lr == 3e-3 and trial.peft.r == 16 and trial.objective.beta == 1.0
    assert trial.model == cfg.model and dataclasses.replace(trial.train, lr=cfg.train.lr) == cfg.train
    with pytest.raises(UserError, match="peft.dropout"):
        apply_overrides(cfg, {"peft.dropout": 1.5})


def test_sweep_checks_every_value_of_the_space_before_launching():
    from rayloom.tune.sweep import check_space_values

    cfg = compose("tune", ["+tune.space.peft.dropout={type: uniform, low: 0.0, high: 1.5}"])
    with pytest.raises(UserError, match=r"tune\.space\.peft\.dropout: the value 1\.5"):
        check_space_values(cfg)
    cfg = compose("tune", ["+tune.space.objective.name={type: choice, values: [clm, nope]}"])
    with pytest.raises(UserError, match=r"tune\.space\.objective\.name: the value 'nope'"):
        check_space_values(cfg)
    check_space_values(compose("tune", ["tune=lora"]))


def test_cli_rejects_a_bad_search_space_path_before_anything_runs(tmp_path):
    import subprocess
    import sys

    from rayloom.config.compose import repo_root

    out = subprocess.run([sys.executable, "-m", "rayloom.cli", "tune", f"storage.root={tmp_path}",
                          "+tune.space.train.learning_rate={type: loguniform, low: 1e-4, high: 1e-2}"],
                         capture_output=True, text=True, cwd=repo_root(), timeout=120)
    assert out.returncode == 2, out.stderr
    assert "tune.space.train.learning_rate" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "tune").exists()  # nothing launched, no sweep directory


def test_optuna_searcher_when_installed():
    from rayloom.tune.sweep import build_searcher

    cfg = compose("tune", ["tune.search_alg=optuna"])
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install optuna"):
            build_searcher(cfg.tune)
        return
    from ray.tune.search.optuna import OptunaSearch

    assert isinstance(build_searcher(cfg.tune), OptunaSearch)
    with pytest.raises(UserError, match="Optuna samples its own points"):
        compose("tune", ["tune=grid", "tune.search_alg=optuna"])
