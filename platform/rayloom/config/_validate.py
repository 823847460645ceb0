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


def name_problem(value: str) -> str:
    """Why `value` cannot be a name that becomes one path segment ('' when it can)."""
    if not isinstance(value, str) or not value:
        return "must not be empty"
    if "\x00" in value:
        return "must not contain a NUL character"
    if "/" in value or "\\" in value:
        return "must be one name, without '/' or '\\'"
    if value in (".", ".."):
        return "must not be '.' or '..' (that would point at a folder above the run's own)"
    if value.startswith("."):
        return "must not start with '.' (rayloom keeps its own hidden files beside outputs)"
    if value != value.strip():
        return "must not start or end with whitespace"
    if any(ord(ch) < 32 for ch in value):
        return "must not contain control characters"
    if len(value.encode("utf-8")) > 200:
        return "must be at most 200 bytes"
    return ""


def safe_name(value: str, key: str, *, allow_empty: bool = False) -> None:
    """A name used as one path segment under the storage root (run names, data/tune/app names)."""
    if allow_empty and value == "":
        return
    problem = name_problem(value)
    require(not problem, key, problem, value)
