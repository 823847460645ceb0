"""One writer per artifact: a lease taken before writing, released after.

Local: `<parent>/.<name>.lease`, created with O_CREAT|O_EXCL (atomic on POSIX filesystems).
S3: `<uri>/_LEASE`, created with a conditional put (`If-None-Match: *`); a stale one is taken
over with `If-Match: <its ETag>`, so two recoverers cannot both win. Servers that ignore or reject
conditional puts get a best-effort fallback (check, put, read back) and a warning: see docs/storage.md.

A lease records host, pid, the process start time and when it was taken. It is *stale* when its
process is gone (same host) or it is older than RAYLOOM_LEASE_TTL_S (default 24 h). A lease whose
process is provably dead on this host is taken over automatically (with a warning); any other
stale lease is only broken on request: `break_lease(uri)`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from rayloom.errors import UserError
from rayloom.processes import pid_alive
from rayloom.storage._io import is_s3, join
from rayloom.storage._marker import LEASE_OBJECT
from rayloom.storage._s3 import error_code, s3_client, s3_errors, split

log = logging.getLogger(__name__)

# Leases this process holds, by artifact: a commit inside a job that holds the lease re-enters it.
_HELD: dict[str, list] = {}
_HELD_LOCK = threading.Lock()
_warned_no_conditional = False


class LeaseHeld(UserError):
    """Another writer holds the lease of this artifact."""


@dataclass(frozen=True)
class LeaseInfo:
    uri: str
    token: str
    host: str
    pid: int
    pid_start: str
    created: float
    etag: str = ""

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.created)

    def stale_reason(self) -> str:
        """Why this lease is stale ('' while its writer may still be alive)."""
        if self.host == socket.gethostname() and not _alive(self.pid, self.pid_start):
            return f"its process {self.pid} on this host is gone"
        if self.age_s > _ttl_s():
            return f"it is {self.age_s / 3600:.1f} h old (RAYLOOM_LEASE_TTL_S={_ttl_s():g})"
        return ""

    def dead_here(self) -> bool:
        return self.host == socket.gethostname() and not _alive(self.pid, self.pid_start)

    def describe(self) -> str:
        return (f"held by pid {self.pid} on {self.host} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.created))}")


def _ttl_s() -> float:
    return float(os.environ.get("RAYLOOM_LEASE_TTL_S") or 24 * 3600)


def _pid_start(pid: int) -> str:
    # Field 22 of /proc/<pid>/stat: start time in clock ticks; guards against a reused pid.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    """The writer's process still runs: its pid is alive and (when recorded) started when it did,
    so a pid the OS reused for another process does not keep a lease."""
    return pid_alive(pid) and (not start or not _pid_start(pid) or _pid_start(pid) == start)


def _key(uri: str) -> str:
    return str(uri).rstrip("/") if is_s3(uri) else os.path.abspath(uri)


def lease_location(uri: str) -> str:
    uri = _key(uri)
    if is_s3(uri):
        return join(uri, LEASE_OBJECT)
    return os.path.join(os.path.dirname(uri), f".{os.path.basename(uri)}.lease")


def _payload(token: str) -> bytes:
    pid = os.getpid()
    return json.dumps({"token": token, "host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid),
                       "created": time.time()}).encode()


def _parse(uri: str, raw: bytes, etag: str = "", mtime: float = 0.0) -> LeaseInfo:
    try:
        data = json.loads(raw)
        return LeaseInfo(uri=uri, token=str(data["token"]), host=str(data["host"]), pid=int(data["pid"]),
                         pid_start=str(data.get("pid_start", "")), created=float(data["created"]), etag=etag)
    except (ValueError, KeyError, TypeError):
        # A writer killed between creating and filling the file: stale once it is a few seconds old.
        return LeaseInfo(uri=uri, token="", host="?", pid=-1, pid_start="", created=mtime or time.time(), etag=etag)


def lease_status(uri: str | os.PathLike) -> LeaseInfo | None:
    """The lease currently held on `uri`, or None."""
    uri = _key(uri)
    where = lease_location(uri)
    if is_s3(uri):
        bucket, key = split(where)
        with s3_errors(where, "lease lookup"):
            try:
                obj = s3_client().get_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return _parse(uri, obj["Body"].read(), etag=obj.get("ETag", ""))
    try:
        with open(where, "rb") as handle:
            raw = handle.read()
        mtime = os.stat(where).st_mtime
    except FileNotFoundError:
        return None
    info = _parse(uri, raw, mtime=mtime)
    if not info.token and time.time() - mtime > 10:
        return LeaseInfo(uri=uri, token="", host=socket.gethostname(), pid=-1, pid_start="", created=mtime)
    return info


def _held_error(info: LeaseInfo) -> LeaseHeld:
    reason = info.stale_reason()
    hint = (f"It looks stale ({reason}); if no writer is running, release it with "
            f"`rayloom storage unlock {info.uri}` (storage.break_lease)." if reason else
            "Wait for that writer to finish, or write to another name.")
    return LeaseHeld(f"another writer is writing {info.uri} ({info.describe()}). {hint}")


def _try_create_local(where: str, token: str) -> bool:
    os.makedirs(os.path.dirname(where), exist_ok=True)
    try:
        fd = os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(_payload(token))
    return True


def _take_over_local(where: str, stale: LeaseInfo, token: str) -> bool:
    # Rename the stale file away (atomic, one recoverer wins); put it back if it changed meanwhile.
    aside = f"{where}.stale-{token}"
    try:
        os.rename(where, aside)
    except FileNotFoundError:
        return _try_create_local(where, token)
    with open(aside, "rb") as handle:
        moved = _parse(stale.uri, handle.read())
    if moved.token != stale.token:
        with suppress(FileExistsError):
            os.link(aside, where)
        os.unlink(aside)
        return False
    os.unlink(aside)
    return _try_create_local(where, token)


def _put_s3(where: str, body: bytes, *, if_none_match: bool = False, if_match: str = "") -> bool:
    """Conditional put; False when the precondition failed."""
    global _warned_no_conditional
    bucket, key = split(where)
    kwargs = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
    with s3_errors(where, "conditional write"):
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=body, **kwargs)
            return True
        except Exception as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            if code not in ("NotImplemented", "501", "InvalidArgument") or not kwargs:
                raise
        if not _warned_no_conditional:
            log.warning("the S3 server does not support conditional writes; leases on it are best effort "
                        "(check, write, read back): see docs/storage.md")
            _warned_no_conditional = True
        s3_client().put_object(Bucket=bucket, Key=key, Body=body)
        return True


def _try_create_s3(where: str, token: str) -> bool:
    if not _put_s3(where, _payload(token), if_none_match=True):
        return False
    # Read back: on a server that ignored If-None-Match, a concurrent writer's lease may have won.
    current = lease_status(where.rsplit("/", 1)[0])
    return current is not None and current.token == token


def acquire_lease(uri: str | os.PathLike) -> str:
    """Take the lease of `uri` (re-entrant within this process); returns a token for release_lease."""
    key = _key(uri)
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key][1] += 1
            return _HELD[key][0]
    where = lease_location(key)
    token = uuid.uuid4().hex
    create = _try_create_s3 if is_s3(key) else _try_create_local
    for _ in range(3):
        if create(where, token):
            break
        current = lease_status(key)
        if current is None:
            continue  # released meanwhile: try again
        if not current.dead_here():
            raise _held_error(current)
        log.warning("taking over the lease of %s: %s", key, current.stale_reason())
        if is_s3(key):
            if _put_s3(where, _payload(token), if_match=current.etag) and _try_read_back(key, token):
                break
        elif _take_over_local(where, current, token):
            break
    else:
        current = lease_status(key)
        raise _held_error(current) if current else LeaseHeld(f"could not take the lease of {key}; try again")
    with _HELD_LOCK:
        _HELD[key] = [token, 1]
    return token


def _try_read_back(key: str, token: str) -> bool:
    current = lease_status(key)
    return current is not None and current.token == token


def release_lease(uri: str | os.PathLike, token: str) -> None:
    key = _key(uri)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None or held[0] != token:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
    current = lease_status(key)
    if current is None or current.token != token:
        log.warning("the lease of %s was taken over while this process held it", key)
        return
    _remove_lease_object(key)


def _remove_lease_object(key: str) -> None:
    where = lease_location(key)
    if is_s3(key):
        bucket, obj = split(where)
        with s3_errors(where, "lease release"):
            s3_client().delete_object(Bucket=bucket, Key=obj)
    else:
        with suppress(FileNotFoundError):
            os.unlink(where)


@contextmanager
def lease(uri: str | os.PathLike) -> Iterator[str]:
    """Hold the one-writer lease of `uri` for the block (LeaseHeld when another writer has it)."""
    token = acquire_lease(uri)
    try:
        yield token
    finally:
        try:
            release_lease(uri, token)
        except UserError as exc:  # the server went away: the lease stays and is recoverable
            log.warning("could not release the lease of %s: %s", uri, exc)


def break_lease(uri: str | os.PathLike, *, force: bool = False) -> LeaseInfo | None:
    """Remove the lease of `uri` when it is stale (or any lease with force=True); returns what was removed.

    The suggested command: `rayloom storage unlock <uri> [--force]`.
    """
    key = _key(uri)
    current = lease_status(key)
    if current is None:
        return None
    if not force and not current.stale_reason():
        raise LeaseHeld(f"the lease of {key} is live ({current.describe()}); pass force=True "
                        f"(`--force`) only if you are sure that writer is gone")
    log.warning("breaking the lease of %s (%s)", key, current.describe())
    _remove_lease_object(key)
    return current
