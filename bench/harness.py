"""Benchmark harness: side-by-side measurements in one run, written as JSON + a Markdown table.

A benchmark module `bench/bench_<name>.py` defines `DESCRIPTION` and `run(quick: bool) -> Result`.
Rows are the systems compared (rayloom and its named baselines, same inputs, same machine);
`ratios` are the headline comparisons. Nothing here asserts on time: benchmarks report.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    name: str
    description: str
    # One dict per system: {"system": "...", "<metric>": value, ...}
    rows: list[dict] = field(default_factory=list)
    # Headline ratios, e.g. {"rayloom / datasets.map (tokens/s)": 1.3}
    ratios: dict[str, float] = field(default_factory=dict)
    # Goals as text next to the ratio they judge, e.g. {"rayloom / datasets.map (tokens/s)": ">= 1.0"}
    goals: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)


def machine_info() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        info["gpus"] = out.stdout.strip().splitlines() if out.returncode == 0 else []
    except (FileNotFoundError, subprocess.TimeoutExpired):
        info["gpus"] = []
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        info["commit"] = rev.stdout.strip()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    return info


def repeat(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> dict:
    """Median/min wall seconds of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeats}


def write(result: Result) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result.machine = result.machine or machine_info()
    json_path = RESULTS_DIR / f"{result.name}.json"
    md_path = RESULTS_DIR / f"{result.name}.md"
    json_path.write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    md_path.write_text(to_markdown(result))
    return json_path, md_path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def to_markdown(result: Result) -> str:
    lines = [f"## {result.name}", "", result.description, ""]
    if result.rows:
        columns: list[str] = []
        for row in result.rows:
            columns += [key for key in row if key not in columns]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in result.rows]
        lines.append("")
    if result.ratios:
        lines += ["| ratio | value | goal |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3g} | {result.goals.get(k, '')} |" for k, v in result.ratios.items()]
        lines.append("")
    lines += [f"- {note}" for note in result.notes]
    machine = result.machine
    lines += ["", f"_machine: {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB, "
                  f"GPUs: {', '.join(machine.get('gpus') or []) or 'none'}; commit {machine.get('commit', '?')}_", ""]
    return "\n".join(lines)
