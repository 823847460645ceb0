"""The demo recipe's pre-training and SFT stages end to end on committed shards (tiny-2l, few steps)."""

from __future__ import annotations

import pytest
from helpers.train_fixtures import pretrain_rows, sft_rows, write_shards

from rayloom.config import compose

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pretrain_then_sft_hand_over_their_models(ray_local, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from rayloom.recipes import DemoState, stage_config
    from rayloom.recipes.demo_training import stage_pretrain, stage_sft

    overrides = ["model=tiny-2l", f"storage.root={tmp_path}", "train.max_steps=6", "train.checkpoint_every=6",
                 "train.eval_every=6", "train.warmup_steps=1", "tracking.progress_bar=false"]
    cfg = compose("run", overrides)
    cfg.run.overrides = overrides
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=40)
    chats = sft_rows(tiny_model_dir, seq_len=64, num=40)
    state = DemoState(model_dir=tiny_model_dir,
                      pretrain_data=write_shards(str(tmp_path / "data" / "pretrain"), rows[:32], rows[32:], seq_len=64),
                      sft_data=write_shards(str(tmp_path / "data" / "sft"), chats[:32], chats[32:], seq_len=64))
    stage_pretrain(stage_config(cfg, cfg.run.stage.train), state)
    # One stage's own change: LoRA for SFT only.
    stage_sft(stage_config(cfg, [*cfg.run.stage.sft, "peft=lora"]), state)
    out = capsys.readouterr().out
    assert "ZeRO-2 + cpu optimizer offload, lr 0.001, 6 steps" in out and out.count("(falling)") == 2
    assert "SFT, lora (r=8)" in out
    assert state.final_model_dir == state.sft_dir and state.adapter_dir
    assert AutoModelForCausalLM.from_pretrained(state.sft_dir).config.num_hidden_layers == 2
    assert state.summary["sft"]["loss_last"] < state.summary["sft"]["loss_first"]
