"""The README's benchmark table is the one generated from bench/results/*.json (never hand-copied)."""

from __future__ import annotations

import json
import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import readme_table  # noqa: E402


def test_readme_table_matches_the_recorded_results():
    assert readme_table.main(["--check"]) == 0, "run: python bench/readme_table.py"


def test_a_changed_result_changes_the_table(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({
        "name": "x", "ratios": {"a / b": 0.8}, "goals": {"a / b": ">= 0.9"}, "machine": {"commit": "abc1234", "cpus": 2}}))
    text = readme_table.table(tmp_path)
    assert "| `x` | abc1234 | 2 CPUs, no GPU | a / b | **0.8** | >= 0.9 ✘ |" in text


def test_goals_are_judged():
    assert readme_table.judge(0.95, ">= 0.9") == " ✔"
    assert readme_table.judge(0.85, ">= 0.9") == " ✘"
    assert readme_table.judge(3.0, "~2") == ""
