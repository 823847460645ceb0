"""Helpers for the sweep tests: committed shards with a validation split (the sweep's metric is
val_loss), and the small, fast trial settings every tune test shares.

Imported by tests/integration/test_tune_*.py as `from helpers.tune_fixtures import ...`.
"""

from __future__ import annotations

from helpers.train_fixtures import pretrain_rows, write_shards


def write_sweep_shards(tiny_model_dir, out_uri: str) -> str:
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=40)
    return write_shards(out_uri, rows[:32], rows[32:], seq_len=64)


def sweep_overrides(root, data_output: str, *extra: str) -> list[str]:
    """tiny-2l, one worker per trial, 8 steps with an evaluation every 2."""
    return ["model=tiny-2l", "data.seq_len=64", f"data.output={data_output}", "train.num_workers=1",
            "train.micro_batch_size=2", "train.warmup_steps=0", "train.max_steps=8", "train.eval_batches=2",
            "deepspeed=zero1", f"storage.root={root}", "tracking.progress_bar=false", "tune.num_reports=4", *extra]
