"""`rayloom-haproxy`: rayloom's HAProxy launcher (rayloom/serve/haproxy_guard.py) as an installed
command, which the Serve config files rayloom writes name as Serve's HAProxy binary.

A top-level module rather than `rayloom.serve.haproxy_guard:main`: that would import the rayloom
package first (its config and storage layers, ~0.25 s here, more on a busy node) on every HAProxy
start and reload, while Serve waits for HAProxy's admin socket; this runs the launcher's file on its
own, standard library only, as `python -I haproxy_guard.py` does for `rayloom serve`.
"""

from __future__ import annotations

import runpy
from pathlib import Path

GUARD = Path(__file__).resolve().parent / "rayloom" / "serve" / "haproxy_guard.py"


def main() -> None:
    runpy.run_path(str(GUARD), run_name="__main__")  # reads sys.argv, then execs haproxy
