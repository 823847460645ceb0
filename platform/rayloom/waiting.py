"""One poll-until-true helper for every deadline loop (Serve readiness, head start-up, tests).

Hand-written because it is eight lines; tenacity would add a dependency for the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The predicate did not become true before the deadline."""


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    *,
    interval_s: float = 0.5,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call `predicate` until it returns a truthy value and return that value.

    Raises `WaitTimeout` naming `message` (a string, or a function called at the deadline so the
    error can say what was last seen) when `timeout_s` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {text}")
        time.sleep(interval_s)
