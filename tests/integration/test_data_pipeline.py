"""The data pipeline on a real local Ray cluster: golden inputs with planted duplicates and bad rows,
packing and loss-mask invariants, byte-identical reruns, S3 round trips, streaming into Ray Train."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data_fixtures import lm_segments, write_golden

from rayloom import storage
from rayloom.config import SourceConfig, compose
from rayloom.data import Manifest, open_shards, read_manifest, run_data_job
from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS, PREFERENCE_COLUMNS
from rayloom.errors import UserError
from rayloom.models import load_tokenizer

pytestmark = pytest.mark.integration


OVERRIDES = ["model=tiny-2l", "data.name=golden", "data.seq_len=128", "data.filters.min_chars=8",
             "data.rows_per_shard=16", "data.val_fraction=0.1", "data.progress_bars=false",
             "data.tokenize_batch_size=16", "data.demo=''"]


def _config(root: Path, sources: list[dict], *overrides: str, output: str = ""):
    cfg = compose("data", [*OVERRIDES, f"storage.root={root}", *overrides])
    data = dataclasses.replace(cfg.data, sources=[SourceConfig(**s) for s in sources], output=output)
    return dataclasses.replace(cfg, data=data)


@pytest.fixture(scope="module")
def golden(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("golden")
    spec = write_golden(root / "src")
    cfg = _config(root / "runs", spec["sources"])
    result = run_data_job(cfg)
    return {"root": root, "spec": spec, "cfg": cfg, "result": result}


def _rows(output: str, split: str) -> list[dict]:
    datasets = open_shards(output)
    return datasets[split].take_all() if split in datasets else []


def test_golden_counts_drops_and_quarantine(golden):
    expected, manifest = golden["spec"]["expected"], golden["result"].manifest
    # The manifest on disk reads back as the one the job returned.
    assert read_manifest(golden["result"].output) == manifest
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    counts = manifest.counts
    assert counts.read == expected["read"]
    assert counts.bad == sum(expected["bad"].values())
    assert counts.filtered == sum(expected["filtered"].values())
    assert counts.deduped == sum(expected["duplicates"].values())
    for reason, n in {**expected["bad"], **expected["filtered"], **expected["duplicates"]}.items():
        assert manifest.drops[reason] == n, reason
    web, chat, books = manifest.sources
    assert [web.kept, chat.kept, books.kept] == expected["kept_per_source"]
    assert chat.sampled == 2 * chat.kept                     # weight 2.0
    assert 0 < books.sampled < books.kept                     # weight 0.5
    assert [f.path for f in web.files] == ["part-0.jsonl", "part-1.jsonl"]   # _SUCCESS skipped
    assert counts.kept == sum(expected["kept_per_source"])
    assert counts.sampled == web.sampled + chat.sampled + books.sampled
    assert manifest.drops["weight_subsampled"] == books.kept - books.sampled

    quarantine = golden["result"].quarantine
    assert quarantine and manifest.quarantine == quarantine
    bad = [json.loads(line) for line in storage.read_text(quarantine).splitlines()]
    reasons = {}
    for row in bad:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        assert row["detail"] and row["file"] and isinstance(row["row"], int)
    assert reasons == expected["bad"]
    not_utf8 = next(r for r in bad if r["reason"] == "not_utf8")
    part0 = (golden["root"] / "src" / "web" / "part-0.jsonl").read_bytes()
    assert "\\xe9" in not_utf8["raw"] and not_utf8["file"].endswith("part-0.jsonl")
    assert not_utf8["row"] == part0.index(b'{"text": "caf\xe9')           # the line's byte offset


def test_packing_keeps_documents_apart_and_masks_only_assistant_tokens(golden, tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    output, manifest = golden["result"].output, golden["result"].manifest
    user_id = tok.convert_tokens_to_ids("<|system|>")
    answers = set(golden["spec"]["expected"]["chat_answers"])
    chat_segments = text_segments = 0
    real = 0
    for split in ("train", "validation"):
        rows = _rows(output, split)
        assert len(rows) == manifest.splits[split].rows > 0
        for row in rows:
            assert set(row) == set(LM_COLUMNS) and len(row["input_ids"]) == 128
            real += int(sum(row["attention_mask"]))
            for seg in lm_segments(row):
                if len(seg["ids"]) > 1 and seg["ids"][1] == user_id:
                    chat_segments += 1
                    trained = [t for t, lab in zip(seg["ids"], seg["labels"], strict=True) if lab != IGNORE_INDEX]
                    assert tok.decode(trained) in answers
                else:
                    text_segments += 1
                    assert seg["labels"][1:] == seg["ids"][1:]
    assert manifest.tokens.truncated_records == 0
    assert chat_segments == manifest.sources[1].sampled
    assert real == manifest.tokens.real
    assert manifest.tokens.packing_efficiency == pytest.approx(real / manifest.tokens.slots, abs=1e-6)
    assert manifest.tokens.packing_efficiency > 0.8    # small shard groups (rows_per_shard=16)
    assert len(manifest.splits["train"].files) > 1                          # rows_per_shard=16


# Long variant, run by `make test-all`: `make test` keeps this file's golden-count, packing, bad-row and Ray Train streaming tests
@pytest.mark.slow
def test_rerun_gives_byte_identical_shards(golden):
    first = golden["result"]
    before = {name: storage.read_bytes(storage.join(first.output, name)) for name in storage.list_files(first.output)}
    assert sum(name.endswith(".parquet") for name in before) == len(first.manifest.splits["train"].files) + \
        len(first.manifest.splits["validation"].files)
    again = run_data_job(golden["cfg"])                     # same config, same output: replaced in place
    assert again.output == first.output
    after = {name: storage.read_bytes(storage.join(again.output, name)) for name in storage.list_files(again.output)}
    assert sorted(after) == sorted(before)
    for name, data in before.items():
        if name != storage.COMMIT_MARKER:                   # the marker records when it was written
            assert after[name] == data, name                # shards and manifest
    assert again.manifest == first.manifest


def test_too_many_bad_rows_fail_loudly_and_publish_nothing(golden):
    cfg = golden["cfg"]
    output = str(golden["root"] / "runs" / "strict")
    strict = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_bad_fraction=0.02, output=output))
    with pytest.raises(UserError, match=r"data.max_bad_fraction=0.02") as info:
        run_data_job(strict)
    assert "quarantine" in str(info.value) or ".quarantine.jsonl" in str(info.value)
    assert storage.exists(output + ".quarantine.jsonl")
    assert not storage.is_committed(output)


# Long variant, run by `make test-all`: `make test` keeps this file's golden-count, packing, bad-row and Ray Train streaming tests
@pytest.mark.slow
def test_preference_pairs_keep_chosen_and_rejected(tmp_path, ray_local, tiny_model_dir):
    records = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(30)]
    records += [{"prompt": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Spell cat."}],
                 "chosen": [{"role": "assistant", "content": "c a t"}], "rejected": "dog"},
                {"prompt": "Same?", "chosen": "yes", "rejected": "yes"},        # bad: identical
                {"prompt": "Missing rejected", "chosen": "x"}]                   # bad: schema
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = _config(tmp_path / "runs", [{"path": str(path), "schema": "preference"}], "data.name=pairs")
    result = run_data_job(cfg)
    assert result.manifest.kind == "preference"
    assert result.manifest.counts.bad == 2 and result.manifest.drops["schema"] == 2
    quarantined = {json.loads(line)["row"]: json.loads(line) for line in storage.read_text(result.quarantine).splitlines()}
    offsets = [0]   # a record's row is the byte offset of its line
    for r in records:
        offsets.append(offsets[-1] + len(json.dumps(r)) + 1)
    assert sorted(quarantined) == [offsets[31], offsets[32]]
    assert {q["reason"] for q in quarantined.values()} == {"schema"}
    assert "identical" in quarantined[offsets[31]]["detail"] and "'rejected'" in quarantined[offsets[32]]["detail"]
    tok = load_tokenizer(tiny_model_dir)
    rows = _rows(result.output, "train") + _rows(result.output, "validation")
    assert len(rows) == 31
    pairs = {(r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][0]["content"],
              r["rejected"]) for r in records[:31]}
    seen = set()
    for row in rows:
        assert set(row) == set(PREFERENCE_COLUMNS)
        sides = []
        for side in ("chosen", "rejected"):
            ids, labels = list(row[f"{side}_input_ids"]), list(row[f"{side}_labels"])
            assert len(ids) == 128 and labels[0] == IGNORE_INDEX
            trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
            text = tok.decode(trained)
            assert text.endswith("<|end|>")
            sides.append(text.removesuffix("<|end|>"))
        seen.add(tuple(sides))
    assert seen == pairs


def _hydra_sources(sources: list[dict]) -> str:
    items = ",".join("{" + ",".join(f"{k}:'{v}'" if isinstance(v, str) else f"{k}:{v}" for k, v in s.items()) + "}"
                     for s in sources)
    return f"data.sources=[{items}]"


# Long variant, run by `make test-all`: `make test` keeps this file's golden-count, packing, bad-row and Ray Train streaming tests
@pytest.mark.slow
def test_cli_reads_sources_from_and_writes_shards_to_s3(golden, s3_server):
    # Through the CLI in a fresh process: its embedded Ray starts with the S3 settings in the
    # environment, as a user's would (this session's Ray started before the S3 test server).
    bucket = s3_server["bucket"]
    src = f"s3://{bucket}/golden-src"
    storage.upload_dir(golden["root"] / "src", src)
    sources = [{**s, "path": s["path"].replace(str(golden["root"] / "src"), src)} for s in golden["spec"]["sources"]]
    output = f"s3://{bucket}/datasets/golden"
    out = subprocess.run([sys.executable, "-m", "rayloom.cli", "data", *OVERRIDES,
                          f"storage.root={golden['root'] / 'runs-s3'}", f"data.output={output}",
                          _hydra_sources(sources)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "read + validate" in out.stdout and "pack + write" in out.stdout      # the summary table
    assert storage.is_committed(output) and storage.exists(output + ".quarantine.jsonl")
    manifest = read_manifest(output)
    assert manifest.content_hash == golden["result"].manifest.content_hash   # same data, other store
    assert [s.uri for s in manifest.sources] == [s["path"] for s in sources]
    rows = open_shards(output)["train"].take_all()
    assert len(rows) == manifest.splits["train"].rows
    for row in rows[:20]:
        lm_segments(row)


# Long variant, run by `make test-all`: `make test` keeps this file's golden-count, packing, bad-row and Ray Train streaming tests
@pytest.mark.slow
def test_materialize_false_streams_the_same_records(golden):
    cfg = golden["cfg"]
    output = str(golden["root"] / "runs" / "stream")
    result = run_data_job(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, materialize=False,
                                                                            output=output)))
    manifest = result.manifest
    assert manifest.materialized is False and manifest.stream is not None
    assert manifest.counts == dataclasses.replace(golden["result"].manifest.counts, tokenized=None, rows=None)
    assert read_manifest(result.output) == manifest
    assert not any(f.endswith(".parquet") and f.startswith("train") for f in storage.list_files(result.output))
    datasets = open_shards(result.output)
    materialized = golden["result"].manifest.splits
    for split in ("train", "validation"):
        real = 0
        for batch in datasets[split].iter_torch_batches(batch_size=8, prefetch_batches=2):
            assert tuple(batch["input_ids"].shape)[1] == 128
            real += int(batch["attention_mask"].sum())
        assert real == materialized[split].tokens, split


def test_ray_train_workers_stream_the_shards(golden, tmp_path):
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = tmp_path / "seen"
    out.mkdir()

    def loop(config):
        shard = ray.train.get_dataset_shard("train")
        rows = tokens = 0
        for batch in shard.iter_torch_batches(batch_size=4, prefetch_batches=2):
            rows += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
        rank = ray.train.get_context().get_world_rank()
        Path(config["out"], f"{rank}.json").write_text(json.dumps({"rows": rows, "tokens": tokens}))

    trainer = TorchTrainer(loop, train_loop_config={"out": str(out)},
                           scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                           datasets=open_shards(golden["result"].output, splits=("train",)),
                           run_config=RunConfig(storage_path=str(tmp_path / "train")))
    trainer.fit()
    seen = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(seen) == 2 and all(s["rows"] > 0 for s in seen)
    train = golden["result"].manifest.splits["train"]
    # Ray Train splits the dataset equally between the 2 workers: an odd last row is left out.
    rows, tokens = sum(s["rows"] for s in seen), sum(s["tokens"] for s in seen)
    assert rows == train.rows - train.rows % 2 and tokens <= train.tokens
    assert tokens == train.tokens or rows < train.rows
