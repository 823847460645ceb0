"""The demo's quiet console: stage summaries and progress bars on the terminal, log records in a file.

Ray, Ray Data, Ray Serve, Ray Train and DeepSpeed each put their own console handler on their
logger (and stop propagation), so turning the root logger down is not enough: every console
handler is turned down (rayloom's own to WARNING, libraries' to ERROR), and every logger that
writes to the console gets the log file as well, so nothing is lost, only moved. Libraries set
up their loggers lazily (on import, on first use), so `mute()` runs again at each stage.

Ray's driver also prints what the raylet pushes to it (worker-count warnings, worker deaths)
straight to sys.stdout as "(raylet) ..." lines, not as log records, and DeepSpeed's logger writes
its records to sys.stdout; while quiet, sys.stdout sends those lines to the log file and everything
else (stage summaries, tables) to the terminal.

Some output never passes through Python's logging: Ray's C++ core worker writes its notices to file
descriptor 2, abseil's signal handler writes stack reports there (in forked engine processes too),
and libraries draw their own tqdm bars on sys.stderr. While quiet, descriptor 2 itself points at the
log file; rayloom's own progress bars draw on the terminal through `rayloom.progress`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rayloom.progress import progress_to

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAYLET_PREFIX = "(raylet)"
# DeepSpeed's record format ("[2026-12-06 11:30:38,829] [WARNING] [real_accelerator.py:213:get_accelerator] ..."),
# below ERROR.
_DEEPSPEED_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[(DEBUG|INFO|WARNING)\] \[")


class _LogFile(logging.FileHandler):
    """The log file's handler, on several libraries' loggers at once. It keeps its own format:
    ray.init re-formats every handler of the "ray" logger."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.formatter = logging.Formatter(_FORMAT)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802  (logging's name)
        pass


class QuietConsole:
    """Moves log records from the console into `path` while active (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file_handler = _LogFile(path)
        self.file_handler.setLevel(logging.INFO)
        self._saved_levels: dict[logging.Handler, int] = {}
        self._attached: list[logging.Logger] = []

    def mute(self) -> None:
        """Turn down every console handler set up so far and copy those loggers' records to the file."""
        root = logging.getLogger()
        loggers = [root] + [lg for lg in root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        for logger in loggers:
            console = [h for h in logger.handlers if _writes_to_console(h)]
            for handler in console:
                if handler not in self._saved_levels:
                    self._saved_levels[handler] = handler.level
                ours = logger is root or logger.name.startswith("rayloom")
                handler.setLevel(max(handler.level, logging.WARNING if ours else logging.ERROR))
            if (console or logger is root) and self.file_handler not in logger.handlers:
                logger.addHandler(self.file_handler)
                self._attached.append(logger)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)

    def restore(self) -> None:
        for handler, level in self._saved_levels.items():
            handler.setLevel(level)
        for logger in self._attached:
            logger.removeHandler(self.file_handler)
        self.file_handler.close()


class _RayletLinesToLog:
    """A sys.stdout that writes Ray's "(raylet) ..." lines and DeepSpeed's records to `log`, everything
    else to `stream`."""

    def __init__(self, stream, log: logging.Logger) -> None:
        self._stream = stream
        self._log = log
        self._swallow_newline = False

    def write(self, text: str) -> int:
        plain = _ANSI.sub("", text)
        if plain.lstrip().startswith(_RAYLET_PREFIX) or _DEEPSPEED_RECORD.match(plain):
            self._log.warning(plain.strip())
            # print() writes the line and its end separately.
            self._swallow_newline = True
            return len(text)
        if self._swallow_newline and text == "\n":
            self._swallow_newline = False
            return len(text)
        self._swallow_newline = False
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _writes_to_console(handler: logging.Handler) -> bool:
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))


@contextmanager
def quiet_console(path: Path) -> Iterator[QuietConsole]:
    """Log records go to `path` instead of the console for the duration of the block."""
    # vLLM engines log from their own processes, which read this at start-up.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # Imported here so their loggers exist before the first record: ray, ray.data and ray.serve
    # set up their console handlers on import (Ray's token-auth notice comes at ray.init).
    import ray  # noqa: F401
    import ray.data  # noqa: F401
    import ray.serve  # noqa: F401

    console = QuietConsole(path)
    console.mute()
    raylet = logging.getLogger("rayloom.recipes.raylet")
    raylet.propagate = False
    raylet.addHandler(console.file_handler)
    stdout, sys.stdout = sys.stdout, _RayletLinesToLog(sys.stdout, raylet)
    try:
        with _stderr_into(path) as terminal, progress_to(terminal):
            yield console
    finally:
        sys.stdout = stdout
        raylet.removeHandler(console.file_handler)
        console.restore()


@contextmanager
def _stderr_into(path: Path) -> Iterator[TextIO]:
    """Point file descriptor 2 at `path` (appending) and yield a stream on the terminal's stderr.

    Where descriptor 2 cannot be duplicated (closed, or a stderr without one), nothing moves and
    sys.stderr is yielded."""
    sys.stderr.flush()
    try:
        terminal_fd = os.dup(2)
    except OSError:
        yield sys.stderr
        return
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding="utf-8", errors="replace")
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(terminal.fileno(), 2)
        terminal.close()
