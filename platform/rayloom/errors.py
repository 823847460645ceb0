"""Error types that separate user mistakes from bugs.

The CLI turns a `UserError` into a one-paragraph message and exit code 2 (no traceback);
`NotBuiltError` into exit code 3. Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake the user can fix: a bad config value, a missing file, an unknown command."""


class NotBuiltError(RuntimeError):
    """A capability that rayloom does not provide yet; raised instead of pretending."""
