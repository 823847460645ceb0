"""The shard contract between the data pipeline and its consumers (training, tuning, eval).

Shards are Parquet files under `<data.output>/<split>/` (split: "train", "validation"), described
by `<data.output>/manifest.json` and published with storage.commit_dir (a `_COMMITTED` marker).

Language-model rows (pre-training and chat SFT), every list exactly `seq_len` long:
  input_ids       list<int32>   token ids; padding uses the tokenizer's pad id
  labels          list<int32>   next-token targets aligned with input_ids (the model shifts);
                                IGNORE_INDEX on padding, on non-assistant chat tokens and on the
                                first token of each packed document, so no label crosses documents
  position_ids    list<int32>   restart at 0 at every packed document
  attention_mask  list<int8>    1 for real tokens, 0 for padding

Preference rows (DPO family), each side padded to `seq_len`:
  chosen_input_ids, chosen_labels, chosen_attention_mask,
  rejected_input_ids, rejected_labels, rejected_attention_mask
  (labels are IGNORE_INDEX on the prompt and padding: only the response is scored)
"""

from __future__ import annotations

IGNORE_INDEX = -100

LM_COLUMNS = ("input_ids", "labels", "position_ids", "attention_mask")
PREFERENCE_COLUMNS = (
    "chosen_input_ids", "chosen_labels", "chosen_attention_mask",
    "rejected_input_ids", "rejected_labels", "rejected_attention_mask",
)
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"

# manifest.json keys every consumer may rely on
MANIFEST_KEYS = (
    "kind",              # "lm" or "preference"
    "seq_len",
    "splits",            # {"train": {"rows": n, "tokens": n, "files": [...]}, "validation": {...}}
    "sources",           # source URIs with weights
    "counts",            # records per stage: read, bad, filtered, deduped, tokenized, rows
    "drops",             # {reason: count}
    "tokenizer_hash",
    "config_hash",
    "content_hash",      # hash over the shard bytes: the lineage id later stages record
)
