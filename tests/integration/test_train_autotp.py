"""DeepSpeed AutoTP tensor parallelism (degree 2, ZeRO-1) on 2 CPU workers under Ray Train (gloo).

Marked slow only for CI time (each run is ~30 s of start-up on 2 cores); it needs no GPU."""

from __future__ import annotations

import pytest
from helpers.train_fixtures import pretrain_rows, train_overrides

from rayloom.config import compose

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_autotp_shards_the_model_trains_and_exports_whole(ray_local, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rayloom.train import train

    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=1) * 16
    cfg = compose("train", train_overrides(tmp_path, "deepspeed=autotp", "train.max_steps=4",
                                           "train.checkpoint_every=4", "train.run_name=autotp"))
    result = train(cfg, datasets={"train": ray_local.data.from_items(rows)})
    losses = [h["loss"] for h in result.history]
    last = result.history[-1]
    assert losses[-1] < losses[0] - 0.5
    # Both ranks form one tensor-parallel group: each holds about half of the layer weights.
    assert last["params_local"] < 0.8 * last["num_params"]
    assert last["global_batch_size"] == 2  # one data-parallel rank: the micro-batch alone
    exported = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert {k: v.shape for k, v in exported.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exported.state_dict()[q], base.state_dict()[q])
