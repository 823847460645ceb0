"""Lineage records: written beside exports, read back (local and S3), described, and used by the
deploy gate to refuse a model that changed after its evaluation."""

from __future__ import annotations

import json

import pytest

from rayloom import lineage, storage
from rayloom.config import ModelConfig
from rayloom.eval import store
from rayloom.eval.gate import check_gate


def _data_dir(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({
        "name": "demo-sft", "kind": "lm", "content_hash": "c0ffee" * 8, "config_hash": "cf", "tokenizer_hash": "tk",
        "sources": [{"uri": "s3://b/raw.jsonl"}], "tokens": {"real": 1234}}))
    storage.commit_dir(out, str(tmp_path / "shards"))
    return str(tmp_path / "shards")


def _chain(tmp_path):
    base = lineage.preset_record(ModelConfig(name="tiny", preset="tiny"))
    pre = lineage.new_record("train", run="pre", parent=base, data=lineage.data_record(_data_dir(tmp_path)),
                             objective="clm", steps=10)
    return lineage.new_record("train", run="sft", parent=pre, data={"source": "in-memory"}, objective="sft",
                              peft="lora", steps=5)


def test_records_chain_back_to_the_data_and_the_preset(tmp_path):
    record = _chain(tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    lineage.write_lineage(model_dir, record)
    back = lineage.read_lineage(model_dir)
    assert back == json.loads(json.dumps(record))
    assert back["parent"]["data"]["content_hash"] == "c0ffee" * 8
    assert back["parent"]["data"]["sources"] == ["s3://b/raw.jsonl"] and back["parent"]["data"]["tokens"] == 1234
    lines = lineage.describe(back)
    assert lines[0].startswith("train run sft (objective sft, peft lora, steps 5) <- in-memory")
    assert "<- data demo-sft (c0ffeec0ffee)" in lines[1] and lines[2] == "model tiny (preset tiny)"
    assert back["id"] != back["parent"]["id"]


def test_missing_or_foreign_models_have_no_lineage(tmp_path):
    assert lineage.read_lineage(tmp_path) is None
    assert lineage.read_lineage("meta-llama/Llama-3.2-1B") is None
    assert lineage.read_lineage(None) is None
    (tmp_path / lineage.LINEAGE_FILE).write_text("{not json")
    assert lineage.read_lineage(tmp_path) is None
    assert lineage.describe(None) == ["(no lineage recorded)"]


def test_base_record_of_a_preset_is_stable_and_of_a_path_is_its_file(tmp_path):
    model = ModelConfig(name="tiny", preset="tiny")
    assert lineage.base_record(model)["id"] == lineage.base_record(model)["id"]
    assert lineage.base_record(ModelConfig(name="x", preset="tiny", hidden_size=128))["id"] != \
        lineage.base_record(model)["id"]
    lineage.write_lineage(tmp_path, {"id": "abc", "stage": "train"})
    assert lineage.base_record(ModelConfig(name="x", preset=None, path=str(tmp_path)))["id"] == "abc"


def test_long_chains_are_cut(tmp_path):
    record = None
    for i in range(lineage.MAX_DEPTH + 5):
        record = lineage.new_record("train", run=f"r{i}", parent=record)
    assert len(lineage.describe(record)) == lineage.MAX_DEPTH + 2
    assert lineage.describe(record)[-1].startswith("...")


def test_roundtrip_on_s3(s3_server):
    uri = f"s3://{s3_server['bucket']}/lineage/model"
    lineage.write_lineage(uri, {"id": "s3id", "stage": "train"})
    assert lineage.read_lineage(uri)["id"] == "s3id"


def test_a_committed_s3_model_has_the_lineage_of_its_current_version(s3_server, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    lineage.write_lineage(model, {"id": "committed", "stage": "train"})
    uri = f"s3://{s3_server['bucket']}/lineage/committed-model"
    storage.commit_dir(model, uri)
    assert lineage.read_lineage(uri)["id"] == "committed"


@pytest.fixture
def evaluated_model(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    lineage.write_lineage(model_dir, {"id": "v1", "stage": "train", "run": "a"})
    root = str(tmp_path / "eval")
    run = str(tmp_path / "eval" / "runs" / "r1")
    payload = {"format": store.FORMAT, "run": "r1", "metrics": {"demo/exact_match": 0.9},
               "model": {"path": str(model_dir), "lineage": lineage.read_lineage(model_dir)}}
    store.write_run(run, payload, {})
    store.record_latest(root, store.model_key(model_dir), run)
    return model_dir, root


def test_gate_passes_the_model_that_was_evaluated(evaluated_model):
    model_dir, root = evaluated_model
    assert check_gate(model_dir, {"min": {"demo/exact_match": 0.8}}, eval_root=root).passed


def test_gate_refuses_a_model_retrained_in_place_after_its_evaluation(evaluated_model):
    model_dir, root = evaluated_model
    lineage.write_lineage(model_dir, {"id": "v2", "stage": "train", "run": "b"})
    result = check_gate(model_dir, {"min": {"demo/exact_match": 0.8}}, eval_root=root)
    assert not result.passed and "changed after its last evaluation" in result.message and "v2" in result.message
