"""`rayloom-haproxy`: rayloom's HAProxy launcher (rayloom/serve/haproxy_guard.py) as an installed
command, which the Serve config files rayloom writes name as Serve's HAProxy binary.

A top-level module rather than `rayloom.serve.haproxy_guard:main`: importing the rayloom package
(its config and storage layers) took ~13 s of CPU on a busy 2-core node, longer than Serve waits
for HAProxy's admin socket, and Serve killed its HAProxy manager. This runs the launcher's file on
its own, standard library only, as `python -I haproxy_guard.py` does for `rayloom serve`.
"""

from __future__ import annotations

import runpy
from pathlib import Path

GUARD = Path(__file__).resolve().parent / "rayloom" / "serve" / "haproxy_guard.py"


def main() -> None:
    runpy.run_path(str(GUARD), run_name="__main__")  # reads sys.argv, then execs haproxy
