"""Where rayloom's own progress bars go.

While `rayloom run` keeps the console quiet, the process's stderr (file descriptor 2) goes to the
run's log file so that library output that bypasses Python logging - Ray's C++ core worker, abseil's
signal reports, forked engine processes, other libraries' tqdm bars - lands there too. rayloom's own
bars still belong on the terminal: they write to the stream registered here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_terminal: TextIO | None = None


def progress_stream() -> TextIO:
    """The terminal's stream while the console is quiet, else sys.stderr (tqdm's default)."""
    return _terminal if _terminal is not None else sys.stderr


@contextmanager
def progress_to(stream: TextIO) -> Iterator[None]:
    global _terminal
    saved, _terminal = _terminal, stream
    try:
        yield
    finally:
        _terminal = saved
