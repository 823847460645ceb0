"""Training refuses shards that another tokenizer made (rayloom.train._data.check_data_tokenizer):
their token ids index another vocabulary. No Ray: the check runs before Ray starts."""

from __future__ import annotations

import pytest

from rayloom.config import compose
from rayloom.data.schema import Manifest
from rayloom.data.tokenization import tokenizer_hash
from rayloom.errors import UserError
from rayloom.train._data import check_data_tokenizer


def _model(*overrides):
    return compose("train", ["model=tiny-2l", *overrides]).model


def test_shards_of_another_tokenizer_are_refused_with_both_hashes(tiny_model_dir):
    other = Manifest(tokenizer_hash="ab" * 32)
    with pytest.raises(UserError) as err:
        check_data_tokenizer(_model(), other, "/runs/data/demo")
    message = str(err.value)
    assert "'/runs/data/demo'" in message and "model=tiny-2l" in message and "abababab" in message
    assert tokenizer_hash(tiny_model_dir)[:16] in message and "rayloom data" in message


def test_shards_of_the_models_tokenizer_pass(tiny_model_dir):
    check_data_tokenizer(_model(), Manifest(tokenizer_hash=tokenizer_hash(tiny_model_dir)), "/d")
    # A local model directory (e.g. an export) is hashed from its files the same way.
    local = _model("model=hf", f"model.path={tiny_model_dir}")
    check_data_tokenizer(local, Manifest(tokenizer_hash=tokenizer_hash(tiny_model_dir)), "/d")
    with pytest.raises(UserError, match="another tokenizer"):
        check_data_tokenizer(local, Manifest(tokenizer_hash="ab" * 32), "/d")


def test_no_recorded_hash_or_a_remote_model_is_not_checked():
    check_data_tokenizer(_model(), Manifest(tokenizer_hash=""), "/d")  # shards written by other tools
    # The workers download an S3 or Hub model; the driver does not fetch it for this check.
    for path in ("s3://bucket/models/base", "org/some-model"):
        check_data_tokenizer(_model("model=hf", f"model.path={path}"), Manifest(tokenizer_hash="ab" * 32), "/d")


def test_an_export_carries_every_tokenizer_file_so_it_hashes_as_its_base(tiny_model_dir, tmp_path):
    """Exports copy the base's side files (rayloom.models.peft_wrap.copy_side_files): all the files
    the data job hashes, including a slow tokenizer's (GPT-2's vocab.json + merges.txt, a
    sentencepiece tokenizer.model), so the check above accepts the base's shards on an export."""
    import shutil

    from rayloom.models.peft_wrap import copy_side_files

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    for name, text in (("vocab.json", "{}"), ("merges.txt", "#version: 0.2\n"), ("tokenizer.model", "spm")):
        (base / name).write_text(text)
    export = tmp_path / "export"
    export.mkdir()
    copy_side_files(base, export)
    assert tokenizer_hash(export) == tokenizer_hash(base) != tokenizer_hash(tiny_model_dir)
