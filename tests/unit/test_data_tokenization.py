"""Tokenization and the fused select -> tokenize -> pack -> write stage, with the tiny model's tokenizer (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayloom.config import DataConfig
from rayloom.data.record_ids import record_id
from rayloom.data.schema import IGNORE_INDEX, LM_COLUMNS, PREFERENCE_COLUMNS
from rayloom.data.selection import SelectRecords
from rayloom.data.shards import TokenizePackShards
from rayloom.data.tokenization import (
    RecordTokenizer,
    TextBackend,
    check_tokenizer,
    load_fast_tokenizer,
    pad_id_of,
    tokenizer_hash,
)
from rayloom.errors import UserError
from rayloom.models import load_tokenizer

NONE = np.zeros(0, np.int64)


def _trained(tok, ids, mask) -> str:
    return tok.decode([t for t, m in zip(ids, mask, strict=True) if m])


def _block(payloads: list[dict], schema: str, file: int = 0, status: list[str] | None = None) -> pa.Table:
    n = len(payloads)
    return pa.table({"doc_id": pa.array([record_id(0, file, i) for i in range(n)], pa.int64()),
                     "chunk": pa.array([record_id(0, file, 0)] * n, pa.int64()),
                     "schema": [schema] * n, "status": status or ["ok"] * n,
                     "payload": [json.dumps(p) for p in payloads]})


def test_chat_loss_mask_covers_exactly_the_assistant_turns(tiny_config):
    tokenizer = RecordTokenizer(tiny_config.model, seq_len=128, batch_size=4)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4 + 4?"},
                {"role": "assistant", "content": "8"}]
    (out,) = tokenizer.chats([messages])
    tok = tokenizer.tokenizer
    assert out.status == "ok" and not out.truncated and len(out.pieces) == 1
    ids, mask = out.pieces[0]
    assert _trained(tok, ids, mask) == "5<|end|>8<|end|>"
    # The same ids the chat template gives serving.
    assert ids.tolist() == list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def test_chat_truncated_before_any_answer_is_dropped_with_a_reason(tiny_config):
    tokenizer = RecordTokenizer(tiny_config.model, seq_len=8, batch_size=4)
    long_question = [{"role": "user", "content": "a long question " * 20}, {"role": "assistant", "content": "ok"}]
    (out,) = tokenizer.chats([long_question])
    assert out.status == "no_trainable_tokens" and out.truncated and out.pieces == []


def test_text_gets_bos_and_eos_is_cut_into_pieces_and_matches_the_tokenizer(tiny_config):
    tokenizer = RecordTokenizer(tiny_config.model, seq_len=16, batch_size=2)
    tok = tokenizer.tokenizer
    texts = ["def f(x): return x + 1\n" * 6, "hello", "naïve café " * 3]
    out = tokenizer.texts(texts)
    assert len(out[0].pieces) > 1 and all(len(ids) <= 16 and mask.all() for ids, mask in out[0].pieces)
    for text, tokenized in zip(texts, out, strict=True):
        ids = np.concatenate([ids for ids, _ in tokenized.pieces]).tolist()
        # The Rust fast path gives exactly what `tokenizer(text)` gives, plus EOS.
        assert ids == tok(text, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
        assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text


def test_text_backend_from_the_driver_tokenizes_identically_without_transformers(tiny_config):
    """The backend the driver serialises gives the workers the same text ids as the tokenizer itself;
    with it, the transformers tokenizer is only loaded when a chat record needs its template."""
    from rayloom.data.tokenization import TextBackend
    from rayloom.models import resolve_model_dir

    texts = ["def f(x): return x + 1\n" * 6, "hello", "naïve café " * 3, "<|end|> inside text", "\u0000\ud7ff \U0001F600"]
    backend = TextBackend.of(load_tokenizer(resolve_model_dir(tiny_config.model)))
    light = RecordTokenizer(tiny_config.model, seq_len=16, batch_size=2, text_backend=backend)
    full = RecordTokenizer(tiny_config.model, seq_len=16, batch_size=2)
    got, want = light.texts(texts), full.texts(texts)
    assert light._tokenizer is None and light.eos_id == full.eos_id
    for a, b in zip(got, want, strict=True):
        assert [(i.tolist(), m.tolist()) for i, m in a.pieces] == [(i.tolist(), m.tolist()) for i, m in b.pieces]
    chat = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"}]
    assert light.chats([chat])[0].pieces[0][0].tolist() == full.chats([chat])[0].pieces[0][0].tolist()


def test_preference_pairs_mask_only_the_responses(tiny_config):
    tokenizer = RecordTokenizer(tiny_config.model, seq_len=64, batch_size=4)
    pair = {"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "chosen": "5", "rejected": "6"}
    (out,) = tokenizer.preferences([pair])
    tok = tokenizer.tokenizer
    (c_ids, c_mask), (r_ids, r_mask) = out.pieces
    assert _trained(tok, c_ids, c_mask) == "5<|end|>" and _trained(tok, r_ids, r_mask) == "6<|end|>"


def test_stage_packs_writes_and_counts_deterministically(tiny_config, tmp_path):
    data = DataConfig(seq_len=32, rows_per_shard=4, val_fraction=0.3, tokenize_batch_size=8)
    texts = [f"document number {i} " * (1 + i % 7) for i in range(40)]
    chat = {"messages": [{"role": "user", "content": "a long question " * 30}, {"role": "assistant", "content": "ok"}]}
    block = pa.concat_tables([_block([{"text": t} for t in texts], "text"),
                              _block([chat], "messages", file=1)])
    block = pa.concat_tables([block, _block([{"text": "bad"}], "text", file=2, status=["bad"])])

    def run(stage):
        select = SelectRecords([1.0], 0, data.val_fraction, [], NONE)
        return TokenizePackShards(data, tiny_config.model, "lm", 0, select, str(stage))(block).to_pylist()

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first == second                                              # names, counts and sha256s
    files = [w for w in first if w["file"]]
    assert {w["split"] for w in files} == {"train", "validation"} and len(files) > 2
    assert all(w["rows"] <= 4 for w in files)
    for w in files:
        a, b = (tmp_path / d / w["file"] for d in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
        table = pq.read_table(a)
        assert table.column_names == list(LM_COLUMNS) and table.num_rows == w["rows"]
        assert sum(map(sum, table.column("attention_mask").to_pylist())) == w["real_tokens"]
    drops = {}
    for w in first:
        for reason, n in json.loads(w["drops"]).items():
            drops[reason] = drops.get(reason, 0) + n
    assert drops == {"no_trainable_tokens": 1}                          # the chat with no answer left
    assert sum(w["documents"] for w in first) == 40                     # the bad row never reaches this stage
    streaming = SelectRecords([1.0], 0, data.val_fraction, [], NONE, "train")
    rows = TokenizePackShards(data, tiny_config.model, "lm", 0, streaming, None)(block)
    assert rows.num_rows == sum(w["rows"] for w in files if w["split"] == "train")


def test_stage_pads_preference_pairs(tiny_config):
    data = DataConfig(seq_len=64, val_fraction=0.0)
    pairs = [{"prompt": [{"role": "user", "content": f"What is {i} + 3?"}], "chosen": str(i + 3),
              "rejected": str(i + 4)} for i in range(5)]
    select = SelectRecords([1.0], 0, 0.0, [], NONE, "train")
    stage = TokenizePackShards(data, tiny_config.model, "preference", 0, select, None)
    rows = stage(_block(pairs, "preference")).to_pylist()
    tok = stage.tokenizer.tokenizer
    assert len(rows) == 5 and set(rows[0]) == set(PREFERENCE_COLUMNS)
    answers = sorted(tok.decode([t for t in r["chosen_labels"] if t != IGNORE_INDEX]) for r in rows)
    assert answers == sorted(f"{i + 3}<|end|>" for i in range(5))


def test_tokenizer_checks_and_hash(tiny_model_dir, tmp_path, copy_of):
    tok = load_tokenizer(tiny_model_dir)
    check_tokenizer(tok, tiny_model_dir, needs_chat=True)
    assert type(load_fast_tokenizer(tiny_model_dir)) is type(tok)
    assert load_fast_tokenizer(tiny_model_dir)("hello world").input_ids == tok("hello world").input_ids
    # The data job's driver loads it this way: what it hands the workers must be what AutoTokenizer gives.
    fast = load_fast_tokenizer(tiny_model_dir)
    assert TextBackend.of(fast) == TextBackend.of(tok) and fast.chat_template == tok.chat_template
    assert pad_id_of(fast) == pad_id_of(tok)
    plain = load_tokenizer(tiny_model_dir)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(UserError, match="generation"):
        check_tokenizer(plain, tiny_model_dir, needs_chat=True)
    check_tokenizer(plain, tiny_model_dir, needs_chat=False)
    other = copy_of(tiny_model_dir)
    assert tokenizer_hash(other) == tokenizer_hash(tiny_model_dir)
    (other / "chat_template.jinja").write_text("changed")
    assert tokenizer_hash(other) != tokenizer_hash(tiny_model_dir)
