"""Search spaces: `tune.space` specs (dotted config path -> distribution) checked against the typed
schema, turned into Ray Tune domains, and applied to a config for one trial.

A spec is a small mapping, e.g.

    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    peft.r: {type: choice, values: [4, 8, 16]}
    train.warmup_steps: {type: grid, values: [0, 10]}

Paths name any field of the typed tree (`RayloomConfig`), so a typo or a path into a group that
does not have the key fails while composing, before Ray starts.
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


def _field_type(root_type: type, path: str, key: str) -> type:
    """The declared type of the field at dotted `path`, or a UserError naming `key`."""
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
    origin = typing.get_origin(declared)
    if declared is bool:
        ok = isinstance(value, bool)
    elif declared is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif declared is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif declared is str:
        ok = isinstance(value, str)
    elif origin is list:
        ok = isinstance(value, list | tuple)
    else:
        ok = True  # optional / union fields: the trial config's own validation checks them
    if not ok:
        name = getattr(declared, "__name__", str(declared))
        raise UserError(f"invalid search space value {key}={value!r}: the config key is of type {name}")


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


def validate_space(space: dict[str, Any], scheduler: str = "asha", search_alg: str = "random") -> None:
    """Check every spec's shape, its path against the typed schema, and its values' types."""
    from rayloom.config.root import RayloomConfig

    for path, spec in flatten_space(space).items():
        key = f"tune.space.{path}"
        if path.split(".", 1)[0] in UNTUNABLE_GROUPS:
            raise UserError(f"invalid search space path {key}: the {path.split('.', 1)[0]}.* group cannot be "
                            "tuned per trial")
        if path in SWEEP_OWNED:
            raise UserError(f"invalid search space path {key}: the sweep sets {path} for every trial itself")
        declared = _field_type(RayloomConfig, path, key)
        if dataclasses.is_dataclass(declared):
            raise UserError(f"invalid search space path {key}: it names the whole {path} group; name one of "
                            "its keys")
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
            values = spec["values"]
            if not isinstance(values, list | tuple) or not values:
                raise UserError(f"invalid search space spec {key}: values must be a non-empty list")
            for value in values:
                _check_value(value, declared, key)
        else:
            low, high = spec["low"], spec["high"]
            for value in (low, high):
                _check_value(value, declared if kind != "randint" else int, key)
            if declared is int and kind != "randint":
                raise UserError(f"invalid search space spec {key}: {path} is an integer key; use randint, choice "
                                "or grid")
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


def build_domain(spec: dict[str, Any], search_alg: str):
    """The Ray Tune domain for one spec (grid specs expand to every value; with search_alg=grid
    choices do too)."""
    from ray import tune

    kind = spec["type"]
    if kind == "grid" or (kind == "choice" and search_alg == "grid"):
        return tune.grid_search(list(spec["values"]))
    if kind == "choice":
        return tune.choice(list(spec["values"]))
    if kind == "loguniform":
        return tune.loguniform(float(spec["low"]), float(spec["high"]))
    if kind == "uniform":
        return tune.uniform(float(spec["low"]), float(spec["high"]))
    # Ray's randint excludes `high`; rayloom's spec includes it (as a user reads "low..high").
    return tune.randint(int(spec["low"]), int(spec["high"]) + 1)


def build_param_space(space: dict[str, Any], search_alg: str) -> dict[str, Any]:
    """{dotted path: domain}: flat keys keep trial names and the results table readable."""
    return {path: build_domain(spec, search_alg) for path, spec in space.items()}


def build_mutations(space: dict[str, Any]) -> dict[str, Any]:
    """PBT's hyperparam_mutations: continuous specs resample from their distribution, lists pick a
    neighbouring value."""
    mutations = {}
    for path, spec in space.items():
        if spec["type"] in ("choice", "grid"):
            mutations[path] = list(spec["values"])
        else:
            mutations[path] = build_domain(spec, "random")
    return mutations


def apply_overrides(cfg, values: dict[str, Any]):
    """A copy of `cfg` with each dotted path set to its value, validated again by the schemas
    (so a sampled value that a group rejects fails with that group's message)."""
    from omegaconf import OmegaConf

    from rayloom.config.compose import to_typed

    node = OmegaConf.structured(cfg)
    for path, value in values.items():
        declared = _field_type(type(cfg), path, f"tune.space.{path}")
        if declared is float and isinstance(value, int):
            value = float(value)
        OmegaConf.update(node, path, value, merge=False)
    return to_typed(node)


def trial_values(config: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """The sampled values of one trial's Tune config, as plain Python values."""
    out = {}
    for path in space:
        value = config[path]
        out[path] = value.item() if hasattr(value, "item") else value
    return out
