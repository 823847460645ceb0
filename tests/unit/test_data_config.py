"""The data group's schema and presets, the demo corpus, and the job's summary table (no Ray)."""

from __future__ import annotations

import pytest

from rayloom.config import DataConfig, SourceConfig, compose
from rayloom.data import demo_corpus
from rayloom.data.pipeline import config_hash, dataset_kind, default_output, quarantine_uri
from rayloom.data.summary import JobSummary
from rayloom.errors import UserError


@pytest.mark.parametrize("overrides,key", [
    (["data.demo=everything"], "data.demo"),
    (["data.seq_len=4"], "data.seq_len"),
    (["data.name=a/b"], "data.name"),
    (["data.dedup.threshold=0"], "data.dedup.threshold"),
    (["data.dedup.num_perm=8"], "data.dedup.num_perm"),
    (["data.filters.max_boilerplate_fraction=2"], "data.filters.max_boilerplate_fraction"),
    (["data.sources=[{path:/x,schema:pairs}]"], "data.sources[].schema"),
    (["data.sources=[{path:/x,format:text,schema:messages}]"], "data.sources[].format"),
    (["data.sources=[{path:/x,text_unit:sentence}]"], "data.sources[].text_unit"),
    (["data.sources=[{path:/x,weight:0}]"], "data.sources[].weight"),
    (["data.sources=[{path:/x,schema:preference},{path:/y,schema:text}]"], "data.sources"),
    (["data.demo_text_weight=-1"], "data.demo_text_weight"),
    (["data.demo=preference", "data.demo_text_weight=0.5"], "data.demo_text_weight"),
])
def test_bad_data_values_fail_at_compose_naming_the_key(overrides, key):
    with pytest.raises(UserError, match=key.replace("[", r"\[").replace("]", r"\]")):
        compose("data", overrides)


def test_presets_and_sources_compose():
    assert compose("data").data.demo == "pretrain"
    assert compose("data", ["data=demo_sft"]).data.demo == "sft"
    assert compose("data", ["data=demo_preference"]).data.name == "demo-preference"
    cfg = compose("data", ["data.sources=[{path:s3://b/chat,schema:messages,weight:2.5}]", "storage.root=/r"])
    assert cfg.data.sources == [SourceConfig(path="s3://b/chat", schema="messages", weight=2.5)]
    assert default_output(cfg) == "/r/data/demo"
    assert quarantine_uri(cfg.data, "s3://b/out/") == "s3://b/out.quarantine.jsonl"
    assert dataset_kind(cfg.data) == "lm"
    assert dataset_kind(DataConfig(sources=[SourceConfig(path="/p", schema="preference")])) == "preference"


def test_config_hash_ignores_where_and_how_fast_but_not_what():
    base = DataConfig(sources=[SourceConfig(path="/p")])
    assert config_hash(base) == config_hash(DataConfig(sources=[SourceConfig(path="/p")], output="/elsewhere",
                                                       num_tokenize_actors=8, tokenize_batch_size=7))
    assert config_hash(base) != config_hash(DataConfig(sources=[SourceConfig(path="/p")], seq_len=512))


def test_demo_tasks_have_checkable_answers_and_held_out_eval():
    held_out = demo_corpus.demo_eval_examples(40, 0)
    assert len(held_out) == 40 and {e["task"] for e in held_out} == set(demo_corpus.TASKS)
    assert held_out == demo_corpus.demo_eval_examples(40, 0)
    sft = demo_corpus.sft_records(2000, 0, 40)
    prefs = demo_corpus.preference_records(2000, 0, 40)
    prompts = {e["prompt"] for e in held_out}
    assert not prompts & {r["messages"][0]["content"] for r in sft}
    assert not prompts & {r["prompt"] for r in prefs}
    assert len({r["messages"][0]["content"] for r in sft}) == len(sft) == 2000
    for record in sft:
        task, prompt, answer = record["task"], record["messages"][0]["content"], record["messages"][1]["content"]
        if task == "add":
            a, b = (int(x) for x in prompt.removeprefix("What is ").removesuffix("?").split(" + "))
            assert answer == str(a + b)
        elif task == "next":
            assert answer == str(int(prompt.split()[-1].rstrip("?")) + 1)
    for pair in prefs:
        assert pair["chosen"] != pair["rejected"]
        assert demo_corpus.is_correct(pair["chosen"], pair["chosen"] + "<|end|>")
        assert not demo_corpus.is_correct(pair["chosen"], pair["rejected"])
    assert demo_corpus.is_correct("42", " 42\nmore text") and not demo_corpus.is_correct("42", "")
    pretrain = demo_corpus.pretrain_records()
    assert len(pretrain) > 2000 and all(r["text"] for r in pretrain)


def test_summary_table_lists_every_stage():
    summary = JobSummary()
    with summary.stage("read + validate") as row:
        row.records_in, row.records_out, row.dropped = 10, 8, {"malformed_json": 2}
    with summary.stage("dedup") as row:
        row.records_in, row.records_out = 8, 8
    table = summary.table()
    assert "read + validate" in table and "malformed_json 2" in table and "total" in table
    assert table.splitlines()[0].split()[:3] == ["stage", "records", "in"]


def test_demo_sft_part_mixes_the_pretraining_paragraphs_back_in_only_when_asked(tmp_path):
    cfg = compose("run", ["data=demo_sft", f"storage.root={tmp_path}"])
    assert [(s.schema, s.weight) for s in demo_corpus.demo_data_config(cfg).sources] == [("messages", 1.0)]
    mixed = compose("run", ["data=demo_sft", "data.demo_text_weight=0.1", f"storage.root={tmp_path}"])
    sources = demo_corpus.demo_data_config(mixed).sources
    assert [(s.schema, s.weight) for s in sources] == [("messages", 1.0), ("text", 0.1)]
    assert sources[1].path.endswith("pretrain") and any((tmp_path / "data" / "demo-raw" / "pretrain").iterdir())
