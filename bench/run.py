"""Run benchmarks: `python bench/run.py [name ...] [--quick] [--list] [--check]` (or `make bench ARGS=...`).

Each named benchmark runs `bench/bench_<name>.py`, prints its Markdown table and writes
bench/results/<name>.json and .md. `--check` (what `make bench-check` runs) re-runs the short
version of each benchmark and prints every headline ratio beside the recorded one without writing
anything, so a regression is seen before it lands; it never fails on a number (tests never assert
on time) — read the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


def available() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="short runs; print each ratio beside the recorded one; write nothing")
    args = parser.parse_args(argv)
    benches = available()
    if args.list:
        for name, path in benches.items():
            print(f"{name:20s} {load(path).DESCRIPTION}")
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(benches)}", file=sys.stderr)
        return 2
    for name in args.names or list(benches):
        module = load(benches[name])
        if args.check:
            print(compare(harness.RESULTS_DIR / f"{name}.json", module.run(quick=True)), flush=True)
            continue
        result = module.run(quick=args.quick)
        json_path, md_path = harness.write(result)
        print(harness.to_markdown(result))
        print(f"wrote {json_path.relative_to(HERE.parent)} and {md_path.relative_to(HERE.parent)}\n")
    return 0


def compare(recorded_path: Path, now: harness.Result) -> str:
    import json

    recorded = json.loads(recorded_path.read_text()) if recorded_path.is_file() else {}
    old = recorded.get("ratios") or {}
    commit = (recorded.get("machine") or {}).get("commit", "?")
    lines = [f"## {now.name}: short run now vs recorded at {commit}", "", "| ratio | recorded | now (short run) |",
             "|---|---|---|"]
    for key in dict.fromkeys([*old, *now.ratios]):
        lines.append(f"| {key} | {_fmt(old.get(key))} | {_fmt(now.ratios.get(key))} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
