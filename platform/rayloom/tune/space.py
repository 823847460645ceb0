"""Search spaces as Ray Tune sees them: `tune.space` specs (checked by rayloom.config.search_space
while composing) turned into Ray Tune domains and PBT mutations, and applied to a config for one
trial.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from rayloom.config.compose import to_typed
from rayloom.config.search_space import field_type


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
    node = OmegaConf.structured(cfg)
    for path, value in values.items():
        declared = field_type(type(cfg), path, f"tune.space.{path}")
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
