"""No code runs from a checkpoint: every pickle-based file rayloom reads from a checkpoint is
loaded with `torch.load(weights_only=True)`, and DeepSpeed's own files (which DeepSpeed loads with
weights_only=False) are scanned for the globals they would import before DeepSpeed touches them.

A pickle names the Python callables it calls on load; `weights_only=True` refuses any that is not
a tensor/container type or on the allow-list below. The allow-list holds only plain data classes
that DeepSpeed and numpy write into their state (a loss scaler, an enum, a named tuple, arrays).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rayloom.errors import UserError

log = logging.getLogger(__name__)

# Globals that DeepSpeed's ZeRO / model-state files and older rayloom RNG files hold: data classes
# and numpy's array reconstruction, none of which runs user-controlled code.
ALLOWED_GLOBALS = frozenset({
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.dtypes.UInt32DType",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Int64DType",
})


def _allowed_objects() -> list:
    """The allow-listed globals that import here (DeepSpeed's may be absent on a driver)."""
    import importlib

    found = []
    for name in ALLOWED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        if isinstance(value, type) or callable(value):
            found.append(value)
    return found


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals a torch checkpoint file would import on load that are not on the allow-list.

    A file that is not a torch zip checkpoint (a raw pickle, say) cannot be scanned and is
    reported as unsafe as a whole."""
    import torch  # heavy; only the readers of checkpoints need it

    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip checkpoint: a bare pickle, or garbage
        return [f"<not a torch zip checkpoint: {type(exc).__name__}>"]
    return sorted(g for g in found if g not in ALLOWED_GLOBALS)


def check_checkpoint_files(folder: str | Path) -> None:
    """Refuse (UserError) a checkpoint folder whose .pt files would import anything off the list.
    Called before DeepSpeed loads a folder, since DeepSpeed unpickles with weights_only=False."""
    for path in sorted(Path(folder).rglob("*.pt")):
        bad = unsafe_globals(path)
        if bad:
            raise UserError(f"refusing to load checkpoint file {path}: it would import {', '.join(bad[:5])}, "
                            "which could run code. It was not written by rayloom/DeepSpeed or was tampered with; "
                            "nothing from it was executed")


def safe_torch_load(path: str | Path):
    """torch.load(weights_only=True) with the allow-list; a refused file is a UserError."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_allowed_objects()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        bad = ", ".join(unsafe_globals(path)[:5]) or "objects off the allow-list"
        raise UserError(f"refusing to load {path}: it would import {bad}, which could run code. It was not "
                        "written by rayloom/DeepSpeed or was tampered with; nothing from it was executed") from None
