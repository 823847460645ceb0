"""Helpers importable from every test module (tests/ is on sys.path via conftest's rootdir)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
