"""The Hydra tree composes everywhere, and bad values fail at compose time naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayloom.config import GROUP_SCHEMAS, JOBS, RayloomConfig, compose, conf_dir, to_yaml
from rayloom.errors import UserError

CONF = conf_dir()
# conf/ folders that hold data files (prompt templates, task files), not Hydra groups.
NON_GROUP_DIRS = {"experiment", "prompts", "tasks", "safety"}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in NON_GROUP_DIRS)
# Group options that need a value the user must supply.
REQUIRED_EXTRAS = {("model", "hf"): ["model.path=/models/some-llama"]}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("job", JOBS)
def test_every_job_composes(job):
    cfg = compose(job)
    assert isinstance(cfg, RayloomConfig)
    assert "deepspeed:" in to_yaml(cfg)


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(group, option):
    cfg = compose("run", [f"{group}={option}", *REQUIRED_EXTRAS.get((group, option), [])])
    assert isinstance(getattr(cfg, group), GROUP_SCHEMAS[group])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    assert isinstance(compose("run", [f"experiment={experiment}"]), RayloomConfig)


def test_every_group_directory_has_a_schema():
    assert set(GROUPS) == set(GROUP_SCHEMAS), "each conf/ group needs a dataclass schema and vice versa"


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["train.lr=-1"], "train.lr"),
        (["deepspeed.zero_stage=5"], "deepspeed.zero_stage"),
        (["deepspeed=zero1", "deepspeed.offload_param=cpu"], "deepspeed.offload_param"),
        (["deepspeed=zero0", "deepspeed.offload_optimizer=cpu"], "deepspeed.offload_optimizer"),
        (["deepspeed.offload_optimizer=nvme"], "deepspeed.nvme_path"),
        (["train.lrr=0.1"], "train.lrr"),
        (["train.max_steps=many"], "train.max_steps"),
        (["peft.method=ia3"], "peft.method"),
        (["serve.max_replicas=0"], "serve.max_replicas"),
        (["data.max_bad_fraction=1.5"], "data.max_bad_fraction"),
        (["model=hf"], "model.path"),
        (["train.global_batch_size=6"], "train.global_batch_size"),
    ],
)
def test_bad_values_fail_at_compose_time_naming_the_key(overrides, key):
    with pytest.raises(UserError) as err:
        compose("train", overrides)
    assert key in str(err.value)


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(UserError, match="tiny-2l"):
        compose("train", ["model=gigantic"])


def test_unknown_job_is_a_user_error():
    with pytest.raises(UserError, match="unknown job"):
        compose("bake")


def test_experiment_overrides_groups():
    cfg = compose("train", ["experiment=tiny_lora_sft"])
    assert cfg.peft.method == "lora" and cfg.objective.name == "sft"


def test_typed_config_is_picklable():
    import pickle

    cfg = compose("train")
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_conf_dir_is_the_repo_conf():
    assert Path(__file__).resolve().parents[2] / "conf" == CONF
