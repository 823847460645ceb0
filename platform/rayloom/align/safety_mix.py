"""objective=safety_sft: SFT with the safety seed set mixed into the train split at a fixed ratio.

The seed records (conf/safety/safety_sft.jsonl, or objective.safety_data) are checked with the data
pipeline's record validator, tokenized with the model's chat template (assistant-only labels) and
laid out as one-conversation LM rows by the pipeline's own packer, so they match the SFT shards'
contract. The mix streams: every block of train rows gets `ratio / (1 - ratio)` seed rows per
row inserted at seeded positions, so each batch holds about `objective.safety_ratio` seed rows
however large the SFT data is. Validation stays the user's own data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.train.objectives import Objective, causal_lm, register_objective

log = logging.getLogger(__name__)

# Train rows per mixing block: large enough that the per-block count of seed rows is close to the ratio.
MIX_BLOCK_ROWS = 64


def safety_data_path(cfg: RayloomConfig) -> str:
    from rayloom.align.safety_seed import SFT_FILE, default_dir

    return cfg.objective.safety_data or str(default_dir() / SFT_FILE)


def load_safety_records(path: str) -> list[list[dict]]:
    """The seed set's conversations, validated as the data pipeline validates `messages` records."""
    from rayloom import storage
    from rayloom.align.safety_seed import read_jsonl
    from rayloom.data.records import BadRecord, validate

    if not storage.exists(path):
        raise UserError(f"invalid config value objective.safety_data={path!r}: no such file")
    conversations = []
    for line, obj in enumerate(read_jsonl(path), start=1):
        try:
            conversations.append(validate(obj, "messages", "text", "NFC")["messages"])
        except BadRecord as exc:
            raise UserError(f"{path}:{line}: bad safety record ({exc.reason}): {exc.detail}") from None
    if not conversations:
        raise UserError(f"invalid config value objective.safety_data={path!r}: the file holds no records")
    return conversations


def build_safety_rows(cfg: RayloomConfig, seq_len: int):
    """The seed set as LM rows (a pyarrow Table, schema.LM_COLUMNS), one conversation per row."""
    import numpy as np

    from rayloom.data.packing import pack_lm
    from rayloom.data.tokenization import load_fast_tokenizer, pad_id_of
    from rayloom.models import resolve_model_dir

    tokenizer = load_fast_tokenizer(resolve_model_dir(cfg.model))
    conversations = load_safety_records(safety_data_path(cfg))
    encoded = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids, masks = [], []
    for row_ids, row_mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True):
        row_ids, row_mask = np.asarray(row_ids[:seq_len], np.int32), np.asarray(row_mask[:seq_len], np.int8)
        if row_mask[1:].any():  # a prompt that fills seq_len leaves nothing to learn
            ids.append(row_ids)
            masks.append(row_mask)
    if not ids:
        raise UserError(f"no safety record fits data.seq_len={seq_len} with a response left to train on")
    table, _ = pack_lm(ids, masks, seq_len, pad_id_of(tokenizer), packing=False, row_seed=cfg.train.seed)
    return table


class MixRows:
    """map_batches (pyarrow) callable: insert seed rows into each block of train rows."""

    def __init__(self, safety, ratio: float, seed: int) -> None:
        self.safety = safety
        self.per_row = ratio / (1.0 - ratio)
        self.seed = seed

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        num = batch.num_rows
        # Seeded by the block's content: the same data gives the same mix on every run and worker.
        first = np.asarray(batch.column("input_ids")[0].as_py(), dtype=np.int64).tobytes() if num else b""
        rng = np.random.default_rng([self.seed, int.from_bytes(hashlib.sha256(first).digest()[:8], "little")])
        count = int(np.floor(num * self.per_row + rng.random()))  # unbiased rounding
        if count == 0:
            return batch
        extra = self.safety.take(pa.array(rng.integers(0, self.safety.num_rows, count)))
        own = batch.select(self.safety.column_names)
        mixed = pa.concat_tables([own, extra.cast(own.schema)])
        return mixed.take(pa.array(rng.permutation(mixed.num_rows)))


def mix_safety_data(datasets: dict, cfg: RayloomConfig, seq_len: int) -> dict:
    ratio = cfg.objective.safety_ratio
    if ratio == 0.0:
        log.warning("objective.safety_ratio=0: safety_sft trains on the SFT data alone")
        return datasets
    safety = build_safety_rows(cfg, seq_len)
    log.info("safety_sft: mixing %d seed conversations from %s into the train split at ratio %.2f", safety.num_rows,
             safety_data_path(cfg), ratio)
    train = datasets["train"].map_batches(MixRows(safety, ratio, cfg.train.seed), batch_format="pyarrow",
                                          batch_size=MIX_BLOCK_ROWS, zero_copy_batch=True)
    return {**datasets, "train": train}


def safety_sft_objective(cfg: RayloomConfig) -> Objective:
    """objective=safety_sft: the SFT loss on SFT shards with the safety seed set mixed in."""
    return dataclasses.replace(causal_lm(cfg), prepare_data=mix_safety_data)


register_objective("safety_sft", safety_sft_objective)
