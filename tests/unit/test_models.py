"""The tiny-model kit: HF directories from config, cached, with the chat template and loss mask."""

from __future__ import annotations

import dataclasses
import os

import pytest

from rayloom import storage
from rayloom.errors import UserError
from rayloom.models import load_model, load_tokenizer, resolve_model_dir
from rayloom.models.presets import preset_dir


def test_tiny_builds_a_standard_hf_directory(tiny_model_dir, tiny_config):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    model = load_model(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == tiny_config.model.num_layers
    assert model.config.vocab_size == len(load_tokenizer(tiny_model_dir))


def test_build_is_cached_by_config_hash(tiny_model_dir, tiny_config):
    stamp = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir(tiny_config.model) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    other = dataclasses.replace(tiny_config.model, seed=1)
    assert preset_dir(other) != tiny_model_dir


def test_split_digits_gives_every_digit_its_own_token_and_its_own_cache_entry(tiny_config, tmp_path):
    from rayloom.models.presets import preset_hash
    from rayloom.models.tokenizer_kit import train_tokenizer

    split = train_tokenizer(2048, split_digits=True)
    pieces = [split.decode([i]) for i in split("after 30: 231", add_special_tokens=False)["input_ids"]]
    assert [p for p in pieces if p.strip().isdigit()] == ["3", "0", "2", "3", "1"]
    assert split.decode(split("after 30: 231")["input_ids"], skip_special_tokens=True) == "after 30: 231"
    merged = train_tokenizer(2048)  # without: " 30" is one token
    assert " 30" in [merged.decode([i]) for i in merged("after 30: 231", add_special_tokens=False)["input_ids"]]
    # Off: the hash of the presets built before the option; on: a cache entry of its own.
    import hashlib
    import json

    from rayloom.models.presets import _ARCH_FIELDS, KIT_VERSION

    before = {name: getattr(tiny_config.model, name) for name in _ARCH_FIELDS} | {"kit_version": KIT_VERSION}
    assert preset_hash(tiny_config.model) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    on = dataclasses.replace(tiny_config.model, split_digits=True)
    assert preset_dir(on) != preset_dir(tiny_config.model)


def test_build_is_deterministic(tiny_config, tmp_path):
    import torch

    a = load_model(resolve_model_dir(tiny_config.model))
    rebuilt = dataclasses.replace(tiny_config.model, cache_dir=str(tmp_path))
    b = load_model(resolve_model_dir(rebuilt))
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_chat_template_masks_exactly_the_assistant_tokens(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"},
                {"role": "user", "content": "And 4 + 4?"}, {"role": "assistant", "content": "8"}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "5<|end|>8<|end|>"
    assert out["input_ids"][0] == tok.bos_token_id and out["input_ids"].count(tok.bos_token_id) == 1


def test_plain_text_starts_with_bos_and_roundtrips(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    ids = tok("def f(x): return x + 1").input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "def f(x): return x + 1"


def test_local_path_without_config_is_a_user_error(tiny_config, tmp_path):
    bad = dataclasses.replace(tiny_config.model, preset=None, path=str(tmp_path))
    with pytest.raises(UserError, match="config.json"):
        resolve_model_dir(bad)


def test_hub_id_offline_is_a_clear_user_error(tiny_config):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    hub = dataclasses.replace(tiny_config.model, preset=None, path="meta-llama/Llama-3.2-1B")
    with pytest.raises(UserError, match="Hugging Face hub"):
        resolve_model_dir(hub)


def test_model_from_s3_is_downloaded_once(s3_server, tiny_model_dir, tiny_config):
    uri = f"s3://{s3_server['bucket']}/models/tiny-2l"
    storage.commit_dir(tiny_model_dir, uri)
    from_s3 = dataclasses.replace(tiny_config.model, preset=None, path=uri)
    local = resolve_model_dir(from_s3)
    assert (local / "config.json").is_file()
    assert load_model(local).config.num_hidden_layers == tiny_config.model.num_layers
    assert resolve_model_dir(from_s3) == local
