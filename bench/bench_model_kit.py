"""Tiny-model kit: building a preset from config (cold) vs resolving it from the hash-keyed cache."""

from __future__ import annotations

import shutil
import tempfile
import time

from harness import Result

DESCRIPTION = "tiny model kit: cold build (BPE training + random init + save) vs cached resolve"


def run(quick: bool = False) -> Result:
    from rayloom.config import compose
    from rayloom.models import resolve_model_dir

    rows = []
    presets = ["tiny-2l"] if quick else ["tiny-2l", "tiny"]
    ratios = {}
    for preset in presets:
        cache = tempfile.mkdtemp(prefix="rayloom-bench-")
        try:
            cfg = compose("run", [f"model={preset}", f"model.cache_dir={cache}"])
            start = time.perf_counter()
            resolve_model_dir(cfg.model)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(10):
                resolve_model_dir(cfg.model)
            warm = (time.perf_counter() - start) / 10
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        rows.append({"system": f"rayloom {preset}", "cold_build_s": cold, "cached_resolve_s": warm})
        ratios[f"{preset}: cached / cold (time)"] = warm / cold
    return Result(name="model_kit", description=DESCRIPTION, rows=rows, ratios=ratios,
                  notes=["Cached resolve checks the hash-keyed directory and returns; no weights are loaded."])
