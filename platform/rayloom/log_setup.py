"""Logging set-up, done once by a job, the CLI or a training worker.

Library modules only call `logging.getLogger(__name__)`. (Not named `logging.py`: that would
mirror the standard library module.)
"""

from __future__ import annotations

import logging

_NOISY = ("urllib3", "botocore", "filelock", "asyncio", "httpx")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
