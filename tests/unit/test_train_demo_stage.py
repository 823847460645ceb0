"""The demo's training stages: their configs, and a clean skip when the data stage produced nothing."""

from __future__ import annotations

from rayloom.config import compose
from rayloom.demo import STAGES_NOT_BUILT, DemoState
from rayloom.train.demo_stage import pretrain_config, sft_config, stage_pretrain, stage_sft


def test_stages_skip_cleanly_without_data(capsys):
    cfg = compose("run", ["model=tiny-2l"])
    state = DemoState()
    stage_pretrain(cfg, state)
    stage_sft(cfg, state)
    out = capsys.readouterr().out
    assert "skipped: no pre-training shards" in out and "skipped: no SFT shards" in out
    assert state.pretrained_dir is None and state.sft_dir is None and state.final_model_dir is None


def test_training_stages_are_built():
    assert "train" not in STAGES_NOT_BUILT and "sft" not in STAGES_NOT_BUILT


def test_pretrain_uses_zero2_with_cpu_offload_unless_deepspeed_was_chosen():
    cfg = pretrain_config(compose("run"))
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.offload_optimizer) == (2, "cpu")
    assert cfg.objective.name == "clm" and cfg.peft.method == "none" and cfg.train.num_workers == 2
    assert pretrain_config(compose("run", ["deepspeed=zero3"])).deepspeed.zero_stage == 3


def test_sft_fine_tunes_the_pretrained_export_fully_unless_peft_is_chosen():
    from rayloom.train.demo_stage import DEMO_SFT_STEPS_FACTOR

    run = compose("run")
    cfg = sft_config(run, "/models/pretrained")
    assert cfg.model.path == "/models/pretrained" and cfg.model.preset is None
    assert cfg.peft.method == "none" and cfg.objective.name == "sft"
    assert cfg.train.max_steps == run.train.max_steps * DEMO_SFT_STEPS_FACTOR
    assert cfg.train.checkpoint_every <= cfg.train.max_steps and cfg.train.lr >= 1e-3
    assert sft_config(compose("run", ["peft=dora"]), None).peft.method == "dora"
