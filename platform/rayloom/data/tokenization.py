"""Tokenize canonical records with the model's fast tokenizer, inside a Ray Data actor pool.

Text documents get the tokenizer's BOS (its post-processor) plus EOS and are cut into pieces of
at most seq_len tokens. Chat records and preference pairs go through the tokenizer's own chat
template with `return_assistant_tokens_mask=True` - the template serving renders - so the loss
mask covers exactly the assistant tokens (the template marks them with {% generation %}).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from rayloom.config import ModelConfig
from rayloom.errors import UserError

TOKENIZE_REASONS = ("no_trainable_tokens", "prompt_too_long")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

# Columns of the tokenized dataset besides the token lists.
KEY_COLUMNS = ("doc_id", "copy", "chunk", "split", "order")


def tokenizer_hash(model_dir: str | Path) -> str:
    """sha256 over the tokenizer's files: two runs with this hash tokenize identically."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_tokenizer(tokenizer, model_dir: str | Path, needs_chat: bool) -> None:
    if not tokenizer.is_fast:
        raise UserError(f"the tokenizer at {model_dir} is not a fast tokenizer; the data pipeline needs one")
    if needs_chat:
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else json.dumps(
            tokenizer.chat_template)
        if not template or template == "null":
            raise UserError(f"the tokenizer at {model_dir} has no chat template: chat and preference records "
                            "need one")
        if not _GENERATION_TAG.search(template):
            raise UserError(f"the chat template of the tokenizer at {model_dir} does not mark assistant turns "
                            "with {% generation %}, so loss masks cannot be derived from it")


def load_fast_tokenizer(model_dir: str | Path):
    """The model's tokenizer, as cheaply as possible inside a Ray worker.

    AutoTokenizer imports torch (4-5 s per fresh worker on a small machine); tokenizers saved as
    the generic fast backend (the tiny presets, most tokenizer.json models) load the same object
    through PreTrainedTokenizerFast without it. Anything else goes through AutoTokenizer.
    """
    config_path = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if config.get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    from rayloom.models import load_tokenizer

    return load_tokenizer(model_dir)


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def ragged(arrays: list[np.ndarray], dtype: pa.DataType = pa.int32()) -> pa.Array:
    """list<dtype> array from numpy arrays, built from offsets (no per-element Python)."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int32, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    values = pa.array(flat.astype(dtype.to_pandas_dtype()), type=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class TokenizeRecords:
    """Ray Data callable class: one tokenizer per actor, loaded once.

    In: doc_id, copy, split, order, schema, payload (canonical JSON).
    Out: KEY_COLUMNS + status ("ok" or a TOKENIZE_REASONS entry), truncated, num_tokens and
    input_ids + loss_mask (LM) or chosen_/rejected_ input_ids + loss_mask (preference). The
    mask (int8, 1 = trained on) is a quarter of the size of an int32 labels list; the packer
    turns it into labels.
    """

    def __init__(self, model: ModelConfig, seq_len: int, kind: str) -> None:
        from rayloom.models import resolve_model_dir

        # Resolved on the worker's node (presets build, s3:// downloads once per node).
        self.tokenizer = load_fast_tokenizer(resolve_model_dir(model))
        self.seq_len = seq_len
        self.kind = kind
        self.eos_id = self.tokenizer.eos_token_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        payloads = [json.loads(p) for p in batch.column("payload").to_pylist()]
        schemas = batch.column("schema").to_pylist()
        keys = {name: batch.column(name).to_numpy() for name in ("doc_id", "copy", "order")}
        keys["split"] = batch.column("split").to_pylist()
        if self.kind == "preference":
            return self._preference(payloads, keys)
        return self._lm(payloads, schemas, keys)

    # -- language-model records -------------------------------------------------------------
    def _lm(self, payloads: list[dict], schemas: list[str], keys: dict) -> pa.Table:
        docs: list = [None] * len(payloads)
        text_idx = [i for i, s in enumerate(schemas) if s == "text"]
        chat_idx = [i for i, s in enumerate(schemas) if s == "messages"]
        if text_idx:
            encoded = self.tokenizer([payloads[i]["text"] for i in text_idx], add_special_tokens=True)["input_ids"]
            for i, ids in zip(text_idx, encoded, strict=True):
                ids = np.asarray([*ids, self.eos_id], dtype=np.int32)
                docs[i] = (ids, np.ones(len(ids), dtype=np.int8), False, "ok")
        if chat_idx:
            for i, (ids, mask) in zip(chat_idx, self._chat([payloads[i]["messages"] for i in chat_idx]),
                                      strict=True):
                truncated = len(ids) > self.seq_len
                ids, mask = ids[:self.seq_len], mask[:self.seq_len]
                status = "ok" if mask[1:].any() else "no_trainable_tokens"
                docs[i] = (ids, mask, truncated, status)
        out: dict[str, list] = {name: [] for name in (*KEY_COLUMNS, "status", "truncated", "num_tokens")}
        ids_out, mask_out = [], []
        empty_ids, empty_mask = np.zeros(0, np.int32), np.zeros(0, np.int8)
        for i, (ids, mask, truncated, status) in enumerate(docs):
            ok = status == "ok"
            # Long text documents become several pieces, each its own packed "document".
            starts = range(0, len(ids), self.seq_len) if (schemas[i] == "text" and ok) else [0]
            for chunk, start in enumerate(starts):
                piece = ids[start:start + self.seq_len]
                for name in ("doc_id", "copy", "order", "split"):
                    out[name].append(keys[name][i])
                out["chunk"].append(chunk)
                out["status"].append(status)
                out["truncated"].append(truncated)
                out["num_tokens"].append(len(piece) if ok else 0)
                ids_out.append(piece if ok else empty_ids)
                mask_out.append(mask[start:start + self.seq_len] if ok else empty_mask)
        return _table(out, {"input_ids": ragged(ids_out), "loss_mask": ragged(mask_out, pa.int8())})

    def _chat(self, conversations: list[list[dict]]) -> list[tuple[np.ndarray, np.ndarray]]:
        encoded = self.tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True,
                                                     return_assistant_tokens_mask=True)
        return [(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=np.int8))
                for ids, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True)]

    # -- preference pairs ---------------------------------------------------------------------
    def _preference(self, payloads: list[dict], keys: dict) -> pa.Table:
        chosen = self._chat([p["prompt"] + [{"role": "assistant", "content": p["chosen"]}] for p in payloads])
        rejected = self._chat([p["prompt"] + [{"role": "assistant", "content": p["rejected"]}] for p in payloads])
        out: dict[str, list] = {name: [] for name in (*KEY_COLUMNS, "status", "truncated", "num_tokens")}
        sides: dict[str, list] = {c: [] for c in ("chosen_input_ids", "chosen_loss_mask", "rejected_input_ids",
                                                 "rejected_loss_mask")}
        empty_ids, empty_mask = np.zeros(0, np.int32), np.zeros(0, np.int8)
        for i, ((c_ids, c_mask), (r_ids, r_mask)) in enumerate(zip(chosen, rejected, strict=True)):
            truncated = max(len(c_ids), len(r_ids)) > self.seq_len
            c_ids, c_mask = c_ids[:self.seq_len], c_mask[:self.seq_len]
            r_ids, r_mask = r_ids[:self.seq_len], r_mask[:self.seq_len]
            # Truncation cuts responses from the end; a prompt that fills seq_len leaves nothing to score.
            ok = bool(c_mask[1:].any() and r_mask[1:].any())
            for name in ("doc_id", "copy", "order", "split"):
                out[name].append(keys[name][i])
            out["chunk"].append(0)
            out["status"].append("ok" if ok else "prompt_too_long")
            out["truncated"].append(truncated)
            out["num_tokens"].append(len(c_ids) + len(r_ids) if ok else 0)
            sides["chosen_input_ids"].append(c_ids if ok else empty_ids)
            sides["chosen_loss_mask"].append(c_mask if ok else empty_mask)
            sides["rejected_input_ids"].append(r_ids if ok else empty_ids)
            sides["rejected_loss_mask"].append(r_mask if ok else empty_mask)
        return _table(out, {name: ragged(arrays, pa.int8() if name.endswith("mask") else pa.int32())
                            for name, arrays in sides.items()})


def _table(keys: dict[str, list], tokens: dict[str, pa.Array]) -> pa.Table:
    columns = {
        "doc_id": pa.array(keys["doc_id"], type=pa.int64()),
        "copy": pa.array(keys["copy"], type=pa.int64()),
        "chunk": pa.array(keys["chunk"], type=pa.int32()),
        "split": pa.array(keys["split"], type=pa.string()),
        "order": pa.array(keys["order"], type=pa.uint64()),
        "status": pa.array(keys["status"], type=pa.string()),
        "truncated": pa.array(keys["truncated"], type=pa.bool_()),
        "num_tokens": pa.array(keys["num_tokens"], type=pa.int32()),
    }
    return pa.table({**columns, **tokens})
