"""The demo recipe's alignment stage on committed preference shards: LoRA DPO through the real driver,
held-out preference accuracy printed before -> after and rising, the aligned export handed on."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.align_fixtures import learnable_pairs, write_preference_shards

from rayloom.config import compose

# Long suite, run by `make test-all`: `make test` trains DPO in test_align_dpo.py; this is the demo's stage around it
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_align_stage_raises_held_out_preference_accuracy(ray_local, tiny_model_dir, tmp_path, capsys):
    from rayloom.recipes import DemoState, stage_config
    from rayloom.recipes.demo_training import stage_align

    shards = write_preference_shards(str(tmp_path / "pairs"), learnable_pairs(tiny_model_dir, 96, seq_len=40),
                                     learnable_pairs(tiny_model_dir, 32, seq_len=40, offset=96), seq_len=40)
    # The command line's train.lr wins over the stage's 1e-4 (these pairs need a faster rate).
    overrides = ["model=tiny-2l", f"storage.root={tmp_path}", "train.max_steps=10", "train.warmup_steps=0",
                 "train.eval_every=10", "train.checkpoint_every=10", "tracking.progress_bar=false",
                 "train.lr=2e-2", "objective.beta=0.5"]
    cfg = compose("run", overrides)
    cfg.run.overrides = overrides
    state = DemoState(model_dir=Path(tiny_model_dir), final_model_dir=str(tiny_model_dir), preference_data=shards)
    stage_align(stage_config(cfg, cfg.run.stage.align), state)
    out = capsys.readouterr().out
    summary = state.summary["align"]
    assert summary["objective"] == "dpo" and summary["held_out_pairs"] == 32 and summary["lr"] == 2e-2
    assert summary["pref_accuracy_after"] > summary["pref_accuracy_before"]
    assert f"{summary['pref_accuracy_before']:.3f} -> {summary['pref_accuracy_after']:.3f} (up)" in out
    assert state.aligned_dir == state.final_model_dir and (Path(state.aligned_dir) / "config.json").is_file()
    assert summary["loss_last"] < summary["loss_first"]
