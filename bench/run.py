"""Run benchmarks: `python bench/run.py [name ...] [--quick] [--list]` (or `make bench ARGS=...`).

Each named benchmark runs `bench/bench_<name>.py`, prints its Markdown table and writes
bench/results/<name>.json and .md.
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
        result = module.run(quick=args.quick)
        json_path, md_path = harness.write(result)
        print(harness.to_markdown(result))
        print(f"wrote {json_path.relative_to(HERE.parent)} and {md_path.relative_to(HERE.parent)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
