"""Checkpoints: their layout and completion markers (read by the driver, export and rayloom.tune),
and the worker side that writes them and resumes from them.

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
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.models.peft_wrap import copy_side_files
from rayloom.train.safe_load import check_checkpoint_files, safe_torch_load

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
    # Rows of the current epoch consumed: per worker in "split" mode (every worker consumes the same
    # number), the global sample offset in "stride" mode (rayloom.train.elastic.global_offset).
    rows_in_epoch: int = 0
    data_mode: str = "split"
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
    path = storage.resolve_committed(checkpoint_uri, "checkpoint")
    return TrainerState.from_json(storage.read_text(storage.join(path, STATE_FILE)))


def mark_complete(filesystem, checkpoint_path: str) -> None:
    """Write the completion marker into a persisted checkpoint (a pyarrow filesystem + path, as
    Ray Train reports it). Called once every rank's files are there."""
    with filesystem.open_output_stream(f"{checkpoint_path.rstrip('/')}/{MARKER}") as stream:
        stream.write(b"ok\n")


# --- the worker side: resume and save (called from train_fn on every rank) ---

def choose_resume(run_dir: str, ray_checkpoint) -> str | None:
    """The newest complete checkpoint of the run. Ray Train's own latest checkpoint is only a hint:
    it is registered once uploaded, which can be before the completion marker."""
    newest = latest_complete(run_dir)
    if ray_checkpoint is not None:
        name = ray_checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
        if newest is None or not newest[1].rstrip("/").endswith(name):
            log.warning("Ray Train's latest checkpoint %s is incomplete; resuming from %s instead", name,
                        newest[1] if newest else "scratch")
    return newest[1] if newest else None


def resume(engine, checkpoint_uri: str, fresh: TrainerState, rank: int, world: int, uses_peft: bool,
           universal: tuple[str, str] | None = None) -> TrainerState:
    """Load the engine's state and this rank's RNG state; return the checkpoint's TrainerState with
    this start added to its resume history. `universal` = (committed universal checkpoint URI, its
    tag) when the checkpoint was written at another world size (rayloom.train.universal)."""
    saved = read_state(checkpoint_uri)
    if (saved.world_size != world and universal is None and saved.zero_stage >= 1) \
            or saved.tensor_parallel_size != fresh.tensor_parallel_size:
        raise UserError(f"checkpoint {checkpoint_uri} was written by {saved.world_size} workers (tensor parallel "
                        f"{saved.tensor_parallel_size}); resume with train.num_workers={saved.world_size}, or export "
                        "it (`rayloom export`) and start a new run from the exported model")
    with storage.local_copy(storage.resolve_committed(checkpoint_uri, "checkpoint")) as local:
        # DeepSpeed unpickles its files with weights_only=False: scan them for code first.
        check_checkpoint_files(local)
        if universal is None:
            load_path, _ = engine.load_checkpoint(str(Path(local) / DS_DIR), tag=saved.ds_tag,
                                                  load_module_strict=not uses_peft)
        else:
            with storage.local_copy(storage.resolve_committed(universal[0], "universal checkpoint")) as converted:
                check_checkpoint_files(converted)
                load_path, _ = engine.load_checkpoint(str(converted), tag=universal[1],
                                                      load_module_strict=not uses_peft)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {checkpoint_uri}")
        # RNG streams are per rank; a rank the checkpoint did not have keeps its fresh seed.
        rng_file = Path(local) / RNG_DIR / f"rank{rank}.pt"
        if rng_file.is_file():
            _set_rng_state(safe_torch_load(rng_file))
    name = checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]
    saved.resumes = [*saved.resumes, {"from_step": saved.step, "checkpoint": name, "from_workers": saved.world_size,
                                      "workers": world, "universal": universal is not None}]
    saved.final = False
    if rank == 0:
        log.info("resumed from %s at step %d (epoch %d, %d rows into it)", name, saved.step, saved.epoch,
                 saved.rows_in_epoch)
    return saved


def save_and_report(engine, state: TrainerState, metrics: dict, cfg: RayloomConfig, model_dir: Path, token: str,
                    rank: int) -> None:
    """Every rank writes its part locally, Ray Train uploads all parts into one directory, and
    once every rank is through (a barrier after the report) rank 0 writes the completion marker."""
    import ray.train  # heavy, worker-only imports
    import torch
    import torch.distributed as dist

    local = Path(tempfile.mkdtemp(prefix="rayloom-ckpt-"))
    try:
        state.ds_tag = f"step{state.step:08d}"
        (local / DS_DIR).mkdir()
        uses_peft = cfg.peft.method != "none"
        # Frozen base weights of a PEFT run are not saved: they come back from the base model.
        # UNIVERSAL_CHECKPOINT_INFO lets ds_to_universal convert this save for another world size.
        engine.save_checkpoint(str(local / DS_DIR), tag=state.ds_tag,
                               client_state={"trainer_state": json.loads(state.to_json()), **universal_info()},
                               exclude_frozen_parameters=uses_peft)
        (local / RNG_DIR).mkdir()
        torch.save(_rng_state(), local / RNG_DIR / f"rank{rank}.pt")
        if state.final:
            _write_final_model(engine, cfg, model_dir, local, rank)
        if rank == 0:
            (local / STATE_FILE).write_text(state.to_json())
            if uses_peft:
                engine.module.peft_config["default"].save_pretrained(str(local / PEFT_CONFIG_DIR))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(local)),
                         checkpoint_dir_name=checkpoint_name(state.step, token))
        # report() returns on each rank once that rank's upload is done; after the barrier all are.
        dist.barrier()
        if rank == 0:
            persisted = ray.train.get_checkpoint()
            mark_complete(persisted.filesystem, persisted.path)
        dist.barrier()
    finally:
        shutil.rmtree(local, ignore_errors=True)


def universal_info() -> dict:
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    return {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def _write_final_model(engine, cfg: RayloomConfig, model_dir: Path, local: Path, rank: int) -> None:
    """Consolidate the weights (a collective under ZeRO-3 / AutoTP) and write, on rank 0, the
    Hugging Face model (full training) or the peft adapter (PEFT training)."""
    import torch

    partitioned = engine.zero_optimization_partition_weights() or engine.autotp_size() > 1
    # DeepSpeed's own gather, the one save_16bit_model uses, without its torch.save round trip.
    state_dict = engine._consolidated_16bit_state_dict() if partitioned else (
        engine.module_state_dict() if rank == 0 else None)
    if rank != 0:
        return
    dtype = getattr(torch, cfg.model.dtype)
    state_dict = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    if cfg.peft.method != "none":
        engine.module.save_pretrained(str(local / ADAPTER_DIR), state_dict=state_dict, safe_serialization=True)
    else:
        out = local / MODEL_DIR
        engine.module.save_pretrained(str(out), state_dict=state_dict, safe_serialization=True)
        copy_side_files(model_dir, out)


def _rng_state() -> dict:
    """Every generator's state as tensors, ints and tuples: loadable with weights_only=True."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    saved = state["numpy"]
    if isinstance(saved, dict):
        saved = (saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                 saved["gauss"])
    np.random.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
