"""The demo's pre-training and SFT stages end to end on committed shards (tiny-2l, few steps)."""

from __future__ import annotations

import pytest
from helpers.train_fixtures import pretrain_rows, sft_rows, write_shards

from rayloom.config import compose

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pretrain_then_sft_hand_over_their_models(ray_local, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from rayloom.demo import DemoState
    from rayloom.train.demo_stage import stage_pretrain, stage_sft

    cfg = compose("run", ["model=tiny-2l", f"storage.root={tmp_path}", "train.max_steps=6", "peft=lora",
                          "train.checkpoint_every=6", "train.warmup_steps=1", "tracking.progress_bar=false"])
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=40)
    chats = sft_rows(tiny_model_dir, seq_len=64, num=40)
    state = DemoState(model_dir=tiny_model_dir,
                      pretrain_data=write_shards(str(tmp_path / "data" / "pretrain"), rows[:32], rows[32:], seq_len=64),
                      sft_data=write_shards(str(tmp_path / "data" / "sft"), chats[:32], chats[32:], seq_len=64))
    stage_pretrain(cfg, state)
    stage_sft(cfg, state)
    out = capsys.readouterr().out
    assert "ZeRO-2 + cpu optimizer offload" in out and out.count("(falling)") == 2
    assert state.final_model_dir == state.sft_dir and state.adapter_dir
    assert AutoModelForCausalLM.from_pretrained(state.sft_dir).config.num_hidden_layers == 2
    assert state.summary["sft"]["loss_last"] < state.summary["sft"]["loss_first"]
