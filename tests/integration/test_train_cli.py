"""`rayloom train` and `rayloom export` end to end through the CLI, with shards, checkpoints and the
exported model on a real S3-compatible server (moto's server mode)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT
from helpers.train_fixtures import pretrain_rows, write_shards

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayloom.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=timeout)


# Long variant, run by `make test-all`: `make test` trains and exports LoRA in test_train_lora.py; S3 commits are in tests/reliability
@pytest.mark.slow
def test_train_and_export_on_s3_through_the_cli(s3_server, tiny_model_dir, tmp_path):
    from rayloom import storage
    from rayloom.train import checkpoints as ckpts

    root = f"s3://{s3_server['bucket']}/cli-run"
    rows = pretrain_rows(tiny_model_dir, seq_len=64, max_rows=24)
    write_shards(f"{root}/data/demo", rows[:20], rows[20:], seq_len=64)
    # The subprocess starts its own embedded Ray with this environment (credentials stay in env vars).
    env = {**os.environ, "RAYLOOM_S3_ROOT": root}
    out = _cli("train", "storage=s3", "model=tiny-2l", "train.max_steps=3", "train.checkpoint_every=2",
               "train.micro_batch_size=2", "train.warmup_steps=0", "train.eval_batches=1", "train.eval_every=2",
               "tracking.progress_bar=false", "train.run_name=cli-s3", env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "run cli-s3: step 3" in out.stdout

    run = f"{root}/train/cli-s3"
    checkpoints = ckpts.list_checkpoints(run)
    assert [step for step, _ in checkpoints] == [2, 3]
    assert all(ckpts.is_complete(uri) for _, uri in checkpoints)
    exported = f"{root}/models/cli-s3"
    assert storage.is_committed(exported) and storage.exists(f"{exported}/model.safetensors")
    from rayloom.data import read_manifest
    from rayloom.lineage import read_lineage

    lineage = read_lineage(exported)  # the export names the shards it trained on and its base model
    assert lineage["run"] == "cli-s3" and lineage["objective"] == "clm" and lineage["steps"] == 3
    assert lineage["data"]["content_hash"] == read_manifest(f"{root}/data/demo").content_hash
    assert lineage["parent"]["stage"] == "model" and lineage["parent"]["preset"] == "tiny-2l"

    # `rayloom export` of the run directory (its newest complete checkpoint) into a local directory,
    # through the CLI's dispatch in this process (a second interpreter would only add start-up time).
    from transformers import AutoModelForCausalLM

    from rayloom.cli import main

    local = tmp_path / "exported"
    assert main(["export", run, "--out", str(local)]) == 0

    assert AutoModelForCausalLM.from_pretrained(local).config.num_hidden_layers == 2


def test_train_cli_user_mistakes_exit_2(tmp_path):
    env = {**os.environ}
    out = _cli("train", "model=tiny-2l", f"storage.root={tmp_path}", "deepspeed.precision=fp16", env=env)
    assert out.returncode == 2 and "fp16" in out.stderr and "Traceback" not in out.stderr
    out = _cli("train", "model=tiny-2l", f"storage.root={tmp_path}", env=env)
    assert out.returncode == 2 and "no committed shards" in out.stderr and "Traceback" not in out.stderr
    # Shards another tokenizer made (the manifest's hash is not tiny-2l's): refused before Ray starts.
    row = {"input_ids": [1] * 8, "labels": [1] * 8, "position_ids": list(range(8)), "attention_mask": [1] * 8}
    write_shards(str(tmp_path / "data" / "demo"), [row] * 4, seq_len=8, tokenizer_hash="0" * 64)
    out = _cli("train", "model=tiny-2l", f"storage.root={tmp_path}", env=env)
    assert out.returncode == 2 and "another tokenizer" in out.stderr and "model=tiny-2l" in out.stderr
    assert "Traceback" not in out.stderr and "starting an embedded local Ray" not in out.stderr
    out = _cli("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
