"""Small helpers for `__post_init__` validation that name the offending config key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rayloom.errors import UserError


def require(condition: bool, key: str, message: str, value: Any) -> None:
    """Raise a UserError naming `key` when `condition` is false."""
    if not condition:
        raise UserError(f"invalid config value {key}={value!r}: {message}")


def one_of(value: Any, allowed: Iterable[Any], key: str) -> None:
    allowed = tuple(allowed)
    require(value in allowed, key, f"must be one of {', '.join(map(str, allowed))}", value)


def positive(value: float | int, key: str) -> None:
    require(value > 0, key, "must be > 0", value)


def non_negative(value: float | int, key: str) -> None:
    require(value >= 0, key, "must be >= 0", value)


def fraction(value: float, key: str, *, inclusive_high: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if inclusive_high else 0.0 <= value < 1.0
    require(ok, key, "must be a fraction in [0, 1" + ("]" if inclusive_high else ")"), value)
