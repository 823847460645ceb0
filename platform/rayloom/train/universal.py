"""Resume at another world size: DeepSpeed universal checkpoints.

ZeRO 1-3 partition the optimizer state (and under ZeRO-3 the weights) per data-parallel rank, so a
checkpoint written by N workers loads only on N. When a run resumes at another size (an elastic
run that shrank or grew, or a rerun with another train.num_workers), rank 0 converts the newest
complete checkpoint once with `deepspeed.checkpoint.ds_to_universal` into a per-parameter layout,
publishes it beside the checkpoint with storage.commit_dir (kind "universal-checkpoint"):

    <run_dir>/checkpoint_<step>_<token>/              the checkpoint as written
    <run_dir>/checkpoint_<step>_<token>.universal/    its universal form, committed like any artifact
        <tag>_universal/zero/<param>/{fp32,exp_avg,exp_avg_sq,step}.pt, mp_rank_*_model_states.pt

and every rank loads it with `"checkpoint": {"load_universal": true}` (set only on the resuming
attempt). A later resume at yet another size reuses the cached conversion. ZeRO-0 checkpoints hold
whole weights and optimizer state and load at any size as they are. Not supported (clear errors):
NVMe offload (DeepSpeed's conversion cannot read swapped-out state), AutoTP tensor parallelism, and
PEFT runs (their frozen base weights are not in the checkpoint).
"""

from __future__ import annotations

import logging
import tempfile
import time
from argparse import Namespace
from pathlib import Path

from rayloom import storage
from rayloom.errors import UserError
from rayloom.train import checkpoints as ckpts
from rayloom.train.safe_load import check_checkpoint_files

log = logging.getLogger(__name__)

SUFFIX = ".universal"
KIND = "universal-checkpoint"


def universal_uri(checkpoint_uri: str) -> str:
    """Where the universal form of a checkpoint is cached: beside it."""
    return checkpoint_uri.rstrip("/") + SUFFIX


def universal_tag(saved: ckpts.TrainerState) -> str:
    return f"{saved.ds_tag}_universal"


def needs_universal(saved: ckpts.TrainerState, world: int) -> bool:
    """Whether resuming `saved` on `world` workers needs the universal form."""
    return saved.world_size != world and saved.zero_stage >= 1


def check_resizable(saved: ckpts.TrainerState, world: int, checkpoint_uri: str, uses_nvme: bool) -> None:
    """A UserError naming what stops `saved` from resuming on `world` workers, if anything does."""
    if saved.world_size == world:
        return
    fix = (f"resume with train.num_workers={saved.world_size}, or export it (`rayloom export`) and start a new "
           "run from the exported model")
    if saved.tensor_parallel_size > 1:
        raise UserError(f"checkpoint {checkpoint_uri} was written by {saved.world_size} workers with AutoTP tensor "
                        f"parallelism, which cannot be resumed on {world} workers; {fix}")
    if uses_nvme and saved.zero_stage >= 1:
        raise UserError(f"checkpoint {checkpoint_uri} was written by {saved.world_size} workers with NVMe offload; "
                        "DeepSpeed's universal checkpoints do not support NVMe offload, so it cannot be resumed on "
                        f"{world} workers; {fix}")
    if saved.peft_method != "none" and saved.zero_stage >= 1:
        raise UserError(f"checkpoint {checkpoint_uri} is a PEFT run's ({saved.peft_method}) written by "
                        f"{saved.world_size} workers; resuming PEFT runs at another world size is not supported "
                        f"(its frozen base weights are not in the checkpoint); {fix}")


def ensure_universal(checkpoint_uri: str, saved: ckpts.TrainerState) -> tuple[str, float]:
    """The committed universal form of a checkpoint, converting it once; (uri, seconds converting,
    0 when it was cached). Runs on one process (rank 0) while the others wait."""
    target = universal_uri(checkpoint_uri)
    if storage.is_committed(target):
        return target, 0.0
    started = time.perf_counter()
    source = storage.resolve_committed(checkpoint_uri, "checkpoint")
    with storage.local_copy(source) as local, tempfile.TemporaryDirectory(prefix="rayloom-universal-") as tmp:
        tag_dir = Path(local) / ckpts.DS_DIR / saved.ds_tag
        check_checkpoint_files(tag_dir)  # the converter unpickles with weights_only=False
        out = Path(tmp) / universal_tag(saved)
        convert(tag_dir, out)
        storage.commit_dir(tmp, target, kind=KIND)
    seconds = time.perf_counter() - started
    log.info("converted %s to a universal checkpoint in %.1fs (%d -> any number of workers)", checkpoint_uri,
             seconds, saved.world_size)
    return target, seconds


def convert(tag_dir: Path, out: Path) -> None:
    """deepspeed.checkpoint.ds_to_universal on one tag folder, in this process."""
    import contextlib
    import io

    from deepspeed.checkpoint import ds_to_universal

    args = Namespace(input_folder=str(tag_dir), output_folder=str(out), num_extract_workers=1, num_merge_workers=1,
                     keep_temp_folder=False, strict=True, inject_missing_state=True)
    # The converter prints its progress; keep the worker's log to rayloom's lines.
    with contextlib.redirect_stdout(io.StringIO()):
        ds_to_universal.main(args)


def prune_orphans(run_dir: str) -> None:
    """Remove cached universal forms whose checkpoint Ray Train has deleted (train.keep_checkpoints)."""
    from pyarrow import fs as pafs

    fs, path = storage.filesystem(run_dir)
    names = set()
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)):
        names.add(info.path.rstrip("/").rsplit("/", 1)[-1])
    for name in names:
        if name.endswith(SUFFIX) and ckpts.parse_step(name[:-len(SUFFIX)]) is not None \
                and name[:-len(SUFFIX)] not in names:
            storage.remove(storage.join(run_dir, name))

