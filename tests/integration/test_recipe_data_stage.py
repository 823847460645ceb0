"""The demo recipe's data stage on a real local Ray: offline corpus -> pre-training, SFT and preference shards."""

from __future__ import annotations

import json
import re

import pytest
from helpers.data_fixtures import lm_segments

from rayloom import storage
from rayloom.config import compose
from rayloom.data import open_shards, read_manifest
from rayloom.data.demo_corpus import demo_eval_examples, sft_records
from rayloom.data.schema import IGNORE_INDEX
from rayloom.models import load_tokenizer
from rayloom.recipes import DemoState, stage_configs
from rayloom.recipes.demo_stages import stage_data

# Long suite, run by `make test-all`: `make test` runs the data pipeline in test_data_pipeline.py; this is the demo's stage around it
pytestmark = [pytest.mark.integration, pytest.mark.slow]

_USER = re.compile(r"<\|user\|>\n(.*?)<\|end\|>", re.S)


def test_data_stage_builds_three_datasets_with_checkable_answers(tmp_path, ray_local, tiny_model_dir):
    overrides = ["model=tiny-2l", f"storage.root={tmp_path}", "data.num_demo_records=400", "data.num_demo_eval=40",
                 "data.progress_bars=false", "run.stages=[model,data]", f"data.output={tmp_path}/shards"]
    cfg = compose("run", overrides)
    cfg.run.overrides = overrides
    state = DemoState()
    stage_data(stage_configs(cfg).data, state)

    for uri, kind, part in ((state.pretrain_data, "lm", "pretrain"), (state.sft_data, "lm", "sft"),
                            (state.preference_data, "preference", "preference")):
        assert uri == f"{tmp_path}/shards/{part}"  # data.output holds the three parts
        manifest = read_manifest(uri)
        assert manifest.kind == kind and manifest.splits["train"].rows > 0
        assert manifest.splits["validation"].rows > 0
    pretrain = read_manifest(state.pretrain_data)
    assert pretrain.drops["duplicate_exact"] > 0                 # pydoc repeats some paragraphs
    assert pretrain.counts.read > 2000
    assert read_manifest(state.preference_data).seq_len == 64

    held_out = [json.loads(line) for line in storage.read_text(state.summary["demo_eval"]).splitlines()]
    assert held_out == demo_eval_examples(40, 0) and len(held_out) == 40

    answers = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in sft_records(400, 0, 40)}
    assert not set(answers) & {e["prompt"] for e in held_out}
    tok = load_tokenizer(tiny_model_dir)
    checked = text = 0
    for row in open_shards(state.sft_data)["train"].take_all():
        for seg in lm_segments(row):
            user = _USER.search(tok.decode(seg["ids"]))
            if user is None:   # a pre-training paragraph mixed in (data.demo_text_weight): all of it trained
                assert all(lab != IGNORE_INDEX for lab in seg["labels"][1:])
                text += 1
                continue
            trained = [t for t, lab in zip(seg["ids"], seg["labels"], strict=True) if lab != IGNORE_INDEX]
            assert tok.decode(trained) == answers[user.group(1)] + "<|end|>"
            checked += 1
    # A chat record is one segment; a long paragraph may be cut into several.
    documents = read_manifest(state.sft_data).splits["train"].documents
    assert 0 < checked < documents <= checked + text
