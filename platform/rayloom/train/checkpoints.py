"""Checkpoint layout, completion markers and the choice of which checkpoint to resume from.

A run lives at `<train.storage_path>/<train.run_name>/` (Ray Train's experiment directory). Each
checkpoint directory there holds:

    ds/<tag>/...            DeepSpeed's files from every rank (model, ZeRO optimizer partitions)
    ds/latest               DeepSpeed's pointer to <tag>
    rng/rank<r>.pt          each rank's RNG state (dropout continues exactly after a resume)
    trainer_state.json      step, data position, tokens seen, and how the run was configured
    peft/                   PEFT runs: the adapter config (to rebuild the adapter from ds/ on export)
    model/ or adapter/      final checkpoint only: the consolidated Hugging Face model / peft adapter
    _COMMITTED              written last, by rank 0, after every rank finished uploading

A checkpoint without `_COMMITTED` is never loaded: Ray Train may have registered it, but a rank
died before all files arrived (or before the marker was written).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field

from rayloom import storage

log = logging.getLogger(__name__)

MARKER = storage.COMMIT_MARKER
STATE_FILE = "trainer_state.json"
DS_DIR = "ds"
RNG_DIR = "rng"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
PEFT_CONFIG_DIR = "peft"
_NAME = re.compile(r"^checkpoint_(\d{8})_([0-9a-f]+)$")


@dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    # Rows of the current epoch this worker has consumed (every worker consumes the same number).
    rows_in_epoch: int = 0
    tokens_seen: int = 0
    samples_seen: int = 0
    # Resume history: [{"from_step": n, "checkpoint": name}] — one entry per (re)start from a checkpoint.
    resumes: list[dict] = field(default_factory=list)
    # How the run was built; `rayloom export` reads these to consolidate the checkpoint.
    world_size: int = 1
    zero_stage: int = 0
    tensor_parallel_size: int = 1
    precision: str = "fp32"
    peft_method: str = "none"
    model_dtype: str = "float32"
    objective: str = "clm"
    # The base model directory the run started from (on the training nodes); export's default base.
    base_model: str = ""
    ds_tag: str = ""
    final: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def checkpoint_name(step: int, token: str) -> str:
    """Sortable by step; the token (one per training attempt) keeps a re-saved step from landing in
    the directory of an earlier, possibly incomplete, attempt."""
    return f"checkpoint_{step:08d}_{token}"


def parse_step(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(step, uri) of every checkpoint directory of a run, complete or not, oldest first."""
    from pyarrow import fs as pafs

    fs, path = storage.filesystem(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    found = []
    for info in infos:
        if info.type != pafs.FileType.Directory:
            continue
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        step = parse_step(name)
        if step is not None:
            found.append((step, storage.join(run_dir, name)))
    return sorted(found)


def is_complete(checkpoint_uri: str) -> bool:
    return storage.is_committed(checkpoint_uri)


def latest_complete(run_dir: str) -> tuple[int, str] | None:
    """The newest checkpoint with its completion marker; incomplete ones are skipped (and logged)."""
    for step, uri in reversed(list_checkpoints(run_dir)):
        if is_complete(uri):
            return step, uri
        log.warning("skipping incomplete checkpoint %s (no %s marker: a worker stopped before it finished)",
                    uri, MARKER)
    return None


def read_state(checkpoint_uri: str) -> TrainerState:
    return TrainerState.from_json(storage.read_text(storage.join(checkpoint_uri, STATE_FILE)))


def mark_complete(filesystem, checkpoint_path: str) -> None:
    """Write the completion marker into a persisted checkpoint (a pyarrow filesystem + path, as
    Ray Train reports it). Called once every rank's files are there."""
    with filesystem.open_output_stream(f"{checkpoint_path.rstrip('/')}/{MARKER}") as stream:
        stream.write(b"ok\n")
