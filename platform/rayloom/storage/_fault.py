"""A deterministic fault hook for the reliability tests: stop a commit after its N-th file.

RAYLOOM_TEST_COMMIT_FAULT="kill:N" SIGKILLs this process after N files of a commit are written;
"pause:N:<path>" creates <path>.ready after N files and waits (at most 120 s) until <path> exists.
Unset (always, outside tests) it costs one environment lookup per file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "RAYLOOM_TEST_COMMIT_FAULT"


def active() -> bool:
    return bool(os.environ.get(ENV))


def after_file(count: int) -> None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return
    action, _, rest = spec.partition(":")
    at, _, path = rest.partition(":")
    if count != int(at):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause":
        Path(path + ".ready").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
