"""Make `rayloom` importable when a job runs from a bare checkout (e.g. a Ray job's working_dir)."""

import sys
from pathlib import Path

try:
    import rayloom  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
