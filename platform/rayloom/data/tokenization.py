"""Tokenize canonical records with the model's fast tokenizer, inside a Ray Data actor pool.

Text documents get the tokenizer's BOS (its post-processor) plus EOS and are cut into pieces of
at most seq_len tokens. Chat records and preference pairs go through the tokenizer's own chat
template with `return_assistant_tokens_mask=True` - the template serving renders - so the loss
mask covers exactly the assistant tokens (the template marks them with {% generation %}).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayloom.config import ModelConfig
from rayloom.errors import UserError

TOKENIZE_REASONS = ("no_trainable_tokens", "prompt_too_long")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

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


@dataclass
class Tokenized:
    """One record copy after tokenization.

    `pieces`: (input_ids int32, loss_mask int8) pairs, each at most seq_len long - a long text
    document becomes several pieces, each packed as its own document; a chat record is one piece.
    Preference records hold two pieces: chosen, rejected. `status` is "ok" or a TOKENIZE_REASONS
    entry (then `pieces` is empty).
    """

    pieces: list[tuple[np.ndarray, np.ndarray]]
    truncated: bool
    status: str


@dataclass(frozen=True)
class TextBackend:
    """What text tokenization needs, without transformers: the fast tokenizer's Rust backend as
    serialised from the very object the driver loaded (no truncation or padding, as
    `tokenizer(texts)` applies), and its EOS id.

    Workers rebuild it with `tokenizers.Tokenizer.from_str` in milliseconds; importing
    transformers for the same object costs about a second per worker process (its import
    machinery), which on a small machine was a quarter of the tokenize stage of `rayloom data`.
    """

    json: str
    eos_id: int

    @classmethod
    def of(cls, tokenizer) -> TextBackend:
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        return cls(backend.to_str(), tokenizer.eos_token_id)

    def encoder(self):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self.json)
        return getattr(backend, "encode_batch_fast", backend.encode_batch)


class RecordTokenizer:
    """The model's fast tokenizer applied to canonical payloads; one per Ray actor, loaded once.

    Text goes through the Rust backend's `encode_batch_fast` (the same ids as `tokenizer(texts)`,
    without building offsets and Python BatchEncoding objects, which are about a third of the
    cost on small documents); chat and preference records go through `apply_chat_template`.
    Given a TextBackend, the transformers tokenizer is loaded only when a chat or preference
    record needs its template.
    """

    def __init__(self, model: ModelConfig, seq_len: int, batch_size: int,
                 text_backend: TextBackend | None = None) -> None:
        self.model = model
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._tokenizer = None
        backend = text_backend or TextBackend.of(self.tokenizer)
        self.eos_id = backend.eos_id
        self._encode = backend.encoder()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from rayloom.models import resolve_model_dir

            # Resolved on the worker's node (presets build, s3:// downloads once per node).
            self._tokenizer = load_fast_tokenizer(resolve_model_dir(self.model))
        return self._tokenizer

    def texts(self, texts: list[str]) -> list[Tokenized]:
        """BOS (the tokenizer's post-processor) + text + EOS, cut into seq_len pieces."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            for encoding in self._encode(texts[start:start + self.batch_size], add_special_tokens=True):
                ids = np.asarray(encoding.ids + [self.eos_id], dtype=np.int32)
                ones = np.ones(len(ids), dtype=np.int8)
                out.append(Tokenized([(ids[i:i + self.seq_len], ones[i:i + self.seq_len])
                                      for i in range(0, len(ids), self.seq_len)], False, "ok"))
        return out

    def chats(self, conversations: list[list[dict]]) -> list[Tokenized]:
        """One piece per conversation, cut at seq_len; dropped when no assistant token is left."""
        out = []
        for ids, mask in self._chat(conversations):
            truncated = len(ids) > self.seq_len
            ids, mask = ids[:self.seq_len], mask[:self.seq_len]
            ok = bool(mask[1:].any())
            out.append(Tokenized([(ids, mask)] if ok else [], truncated, "ok" if ok else "no_trainable_tokens"))
        return out

    def preferences(self, payloads: list[dict]) -> list[Tokenized]:
        """Pieces (chosen, rejected), each prompt + response through the chat template."""
        chosen = self._chat([p["prompt"] + [{"role": "assistant", "content": p["chosen"]}] for p in payloads])
        rejected = self._chat([p["prompt"] + [{"role": "assistant", "content": p["rejected"]}] for p in payloads])
        out = []
        for (c_ids, c_mask), (r_ids, r_mask) in zip(chosen, rejected, strict=True):
            truncated = max(len(c_ids), len(r_ids)) > self.seq_len
            c_ids, c_mask = c_ids[:self.seq_len], c_mask[:self.seq_len]
            r_ids, r_mask = r_ids[:self.seq_len], r_mask[:self.seq_len]
            # Truncation cuts responses from the end; a prompt that fills seq_len leaves nothing to score.
            ok = bool(c_mask[1:].any() and r_mask[1:].any())
            out.append(Tokenized([(c_ids, c_mask), (r_ids, r_mask)] if ok else [], truncated,
                                 "ok" if ok else "prompt_too_long"))
        return out

    def records(self, schemas: list[str], payloads: list[dict]) -> list[Tokenized]:
        """Tokenized records in input order, whatever mix of schemas."""
        out: list = [None] * len(payloads)
        for schema, run in (("text", lambda ps: self.texts([p["text"] for p in ps])),
                            ("messages", lambda ps: self.chats([p["messages"] for p in ps])),
                            ("preference", self.preferences)):
            idx = [i for i, s in enumerate(schemas) if s == schema]
            if idx:
                for i, tokenized in zip(idx, run([payloads[i] for i in idx]), strict=True):
                    out[i] = tokenized
        return out

    def _chat(self, conversations: list[list[dict]]) -> list[tuple[np.ndarray, np.ndarray]]:
        result = []
        for start in range(0, len(conversations), self.batch_size):
            encoded = self.tokenizer.apply_chat_template(conversations[start:start + self.batch_size], tokenize=True,
                                                         return_dict=True, return_assistant_tokens_mask=True)
            result += [(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=np.int8))
                       for ids, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True)]
        return result
