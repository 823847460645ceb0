"""Helpers importable from every test module (`tests/` is on sys.path via pyproject's `pythonpath`).

`helpers.<area>_fixtures` hold the data builders and cluster helpers the tests of one area share.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
