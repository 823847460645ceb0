"""What the driver tells Ray Train about its workers' environment, and how it reads their errors."""

from __future__ import annotations

import os

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.runtime import build_env_vars

# Environment variables naming credential *files* or profiles (never secret values): forwarded to
# workers so they find the same credentials the driver uses.
_CREDENTIAL_REFERENCES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE")


def worker_runtime_env(cfg: RayloomConfig) -> dict | None:
    """Non-secret settings and credential-file references for the workers, in case Ray was
    started before they were set. Inside a Ray job the job's runtime_env already carries them."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return None
    env = build_env_vars(cfg.cluster)
    env.update({name: os.environ[name] for name in _CREDENTIAL_REFERENCES if os.environ.get(name)})
    return {"env_vars": env} if env else None


def user_error_in(exc: BaseException) -> UserError | None:
    """A UserError raised on a worker, found inside Ray Train's failure wrappers."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        todo += list(getattr(current, "worker_failures", {}).values())
        for attr in ("controller_failure", "cause", "__cause__", "__context__"):
            nested = getattr(current, attr, None)
            if isinstance(nested, BaseException):
                todo.append(nested)
    return None
