"""Error types that separate user mistakes from bugs.

The CLI and the jobs/*.py entrypoints turn a `UserError` into a one-paragraph message and exit
code 2 (no traceback). Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake the user can fix: a bad config value, a missing file, an unknown command."""
