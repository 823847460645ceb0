"""The shard contract between the data pipeline and its consumers (training, tuning, eval).

Shards are Parquet files under `<data.output>/<split>/` (split: "train", "validation"), described
by `<data.output>/manifest.json` (the `Manifest` dataclass below) and published with storage.commit_dir (a `_COMMITTED` marker).

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

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100

LM_COLUMNS = ("input_ids", "labels", "position_ids", "attention_mask")
PREFERENCE_COLUMNS = (
    "chosen_input_ids", "chosen_labels", "chosen_attention_mask",
    "rejected_input_ids", "rejected_labels", "rejected_attention_mask",
)
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"



@dataclass
class FileEntry:
    path: str = ""          # relative to the source's URI
    size: int = 0


@dataclass
class SourceEntry:
    """One configured source: where, how it was read, and its records per stage."""

    uri: str = ""
    schema: str = "text"
    format: str = ""
    weight: float = 1.0
    files: list[FileEntry] = field(default_factory=list)
    read: int = 0
    bad: int = 0
    kept: int = 0
    sampled: int = 0        # copies in the mix after source weights


@dataclass
class SplitStats:
    """One split's shards. The numbers are None when the data streams from its sources."""

    rows: int | None = None
    tokens: int | None = None       # real (non-padding) tokens
    slots: int | None = None        # rows x seq_len (x 2 for preference rows)
    documents: int | None = None
    files: list[str] = field(default_factory=list)  # relative to the output, in reading order


@dataclass
class StageCounts:
    """Records per stage. tokenized and rows are None when the data streams from its sources."""

    read: int = 0
    bad: int = 0
    filtered: int = 0
    deduped: int = 0
    kept: int = 0
    sampled: int = 0
    tokenized: int | None = None
    rows: int | None = None


@dataclass
class TokenStats:
    real: int = 0
    slots: int = 0
    packing_efficiency: float = 0.0
    truncated_records: int = 0


@dataclass
class StreamSpec:
    """What the streaming reader needs to compute the rows (data.materialize=false)."""

    data: dict[str, Any] = field(default_factory=dict)      # the DataConfig, as a dict
    model: dict[str, Any] = field(default_factory=dict)     # the ModelConfig, as a dict
    dropped: str = ""                                        # Parquet file of dropped record ids
    forced_validation: list[int] = field(default_factory=list)


@dataclass
class Manifest:
    """`manifest.json`: the one contract between the data job and every stage that reads shards.

    content_hash is the lineage id later stages record (a hash over the shard bytes, or over the
    inputs when the data streams)."""

    kind: str = "lm"                # "lm" or "preference"
    seq_len: int = 0
    splits: dict[str, SplitStats] = field(default_factory=dict)
    sources: list[SourceEntry] = field(default_factory=list)
    counts: StageCounts = field(default_factory=StageCounts)
    drops: dict[str, int] = field(default_factory=dict)     # {reason: records}
    tokenizer_hash: str = ""
    config_hash: str = ""
    content_hash: str = ""
    format_version: int = 1
    name: str = ""
    packing: bool = True
    pad_id: int | None = None
    quarantine: str | None = None   # the bad-rows file, when there were any
    materialized: bool = True
    tokens: TokenStats | None = None
    stream: StreamSpec | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Manifest:
        """Build from the JSON form; a key the schema does not know is a ValueError naming it."""
        return _build(cls, value, "manifest")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as the annotated type `tp`: dataclasses, list[X], dict[str, X], X | None."""
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        return tp(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return _build(next(a for a in args if a is not type(None)), value, where)
    return value
