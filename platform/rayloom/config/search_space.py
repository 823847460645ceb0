"""Search-space specs of `tune.space` (dotted config path -> distribution), checked while composing.

A spec is a small mapping, e.g.

    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    peft.r: {type: choice, values: [4, 8, 16]}
    train.warmup_steps: {type: grid, values: [0, 10]}

Two checks, at two levels of the tree: a spec's own shape (`check_space_specs`, run by the tune
group's schema) and its path and values against the typed root (`check_space_paths`, run by the
root schema, the one place that knows every group). Turning specs into Ray Tune domains is
rayloom.tune.space's job.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from rayloom.errors import UserError

# type -> keys the spec must carry
SPEC_KEYS: dict[str, tuple[str, ...]] = {
    "loguniform": ("low", "high"),
    "uniform": ("low", "high"),
    "randint": ("low", "high"),
    "choice": ("values",),
    "grid": ("values",),
}
# Groups a trial must not change: the sweep's own settings and what stages the main job runs.
UNTUNABLE_GROUPS = ("tune", "run", "cluster")
# Keys the sweep sets itself for every trial.
SWEEP_OWNED = ("train.run_name", "train.storage_path", "train.checkpoint_every", "train.eval_every",
               "train.keep_checkpoints", "train.export", "train.export_dir", "train.on_existing")


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Accept nested mappings too (`train: {lr: {type: ...}}`, which is what a command-line
    override `+tune.space.train.lr={type: ...}` composes to) and return {dotted path: spec}."""
    flat: dict[str, Any] = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and "type" not in value and value:
            flat.update(flatten_space(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_space_specs(space: dict[str, Any], scheduler: str = "asha", search_alg: str = "random") -> None:
    """Each spec's shape (type, keys, bounds) and its fit with the scheduler and searcher; needs no
    other config group."""
    for path, spec in flatten_space(space).items():
        key = f"tune.space.{path}"
        group = path.split(".", 1)[0]
        if group in UNTUNABLE_GROUPS:
            raise UserError(f"invalid search space path {key}: the {group}.* group cannot be tuned per trial")
        if path in SWEEP_OWNED:
            raise UserError(f"invalid search space path {key}: the sweep sets {path} for every trial itself")
        if not isinstance(spec, dict) or "type" not in spec:
            raise UserError(f"invalid search space spec {key}={spec!r}: expected a mapping with 'type' "
                            f"({', '.join(SPEC_KEYS)})")
        kind = spec["type"]
        if kind not in SPEC_KEYS:
            raise UserError(f"invalid search space spec {key}: unknown type {kind!r} (one of {', '.join(SPEC_KEYS)})")
        missing = [k for k in SPEC_KEYS[kind] if k not in spec]
        extra = [k for k in spec if k not in (*SPEC_KEYS[kind], "type")]
        if missing or extra:
            raise UserError(f"invalid search space spec {key}: type {kind} needs exactly "
                            f"{', '.join(SPEC_KEYS[kind])} (missing: {missing or 'none'}, unknown: {extra or 'none'})")
        if kind in ("choice", "grid"):
            if not isinstance(spec["values"], list | tuple) or not spec["values"]:
                raise UserError(f"invalid search space spec {key}: values must be a non-empty list")
        else:
            low, high = spec["low"], spec["high"]
            if not (_is_number(low) and _is_number(high)):
                raise UserError(f"invalid search space spec {key}: low={low!r} and high={high!r} must be numbers")
            if not low < high:
                raise UserError(f"invalid search space spec {key}: low={low} must be < high={high}")
            if kind == "loguniform" and low <= 0:
                raise UserError(f"invalid search space spec {key}: loguniform needs low > 0")
        if search_alg == "optuna" and kind == "grid":
            raise UserError(f"invalid search space spec {key}: Optuna samples its own points; use choice instead "
                            "of grid with tune.search_alg=optuna")
        if search_alg == "grid" and kind not in ("choice", "grid"):
            raise UserError(f"invalid search space spec {key}: tune.search_alg=grid needs choice/grid values, "
                            f"not {kind}")
    if scheduler == "pbt" and not space:
        raise UserError("invalid config value tune.space={}: PBT needs at least one key to perturb")


def field_type(root_type: type, path: str, key: str) -> Any:
    """The declared type of the field at dotted `path` of the dataclass `root_type`, or a
    UserError naming `key`."""
    current: Any = root_type
    walked = []
    for part in path.split("."):
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            raise UserError(f"invalid search space path {key}: {'.'.join(walked)} is a "
                            f"{getattr(current, '__name__', current)} value, it has no key {part!r}")
        hints = typing.get_type_hints(current)
        if part not in hints:
            where = ".".join(walked) or "the config root"
            known = ", ".join(sorted(hints))
            raise UserError(f"invalid search space path {key}: {where} has no key {part!r} (known keys: {known})")
        walked.append(part)
        current = hints[part]
    return current


def _check_value(value: Any, declared: Any, key: str) -> None:
    if declared is bool:
        ok = isinstance(value, bool)
    elif declared is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif declared is float:
        ok = _is_number(value)
    elif declared is str:
        ok = isinstance(value, str)
    elif typing.get_origin(declared) is list:
        ok = isinstance(value, list | tuple)
    else:
        ok = True  # optional / union fields: the trial config's own validation checks them
    if not ok:
        name = getattr(declared, "__name__", str(declared))
        raise UserError(f"invalid search space value {key}={value!r}: the config key is of type {name}")


def check_space_paths(space: dict[str, Any], root_type: type) -> None:
    """Every (shape-checked) spec's path names one field of the typed tree `root_type`, and its
    values fit that field's type."""
    for path, spec in flatten_space(space).items():
        key = f"tune.space.{path}"
        declared = field_type(root_type, path, key)
        if dataclasses.is_dataclass(declared):
            raise UserError(f"invalid search space path {key}: it names the whole {path} group; name one of "
                            "its keys")
        kind = spec["type"]
        if kind in ("choice", "grid"):
            for value in spec["values"]:
                _check_value(value, declared, key)
            continue
        for value in (spec["low"], spec["high"]):
            _check_value(value, declared if kind != "randint" else int, key)
        if declared is int and kind != "randint":
            raise UserError(f"invalid search space spec {key}: {path} is an integer key; use randint, choice "
                            "or grid")
