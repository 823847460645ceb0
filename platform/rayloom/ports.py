"""Local TCP ports: a free one for a server this process is about to start.

A port is picked some time before its server binds it (a config is composed, Ray starts the actor,
HAProxy starts). If that port came from the kernel's ephemeral range (`bind(port=0)`), any
`connect()` or `bind(0)` on the machine can be handed the same number in between: Ray and vLLM make
many while a deployment starts (CI once saw Serve's HAProxy find a serve.port picked so taken).
So ports are drawn at random from a band the kernel never hands out by itself and Ray does not use
(above Ray's default worker ports 10002-19999, below Serve's direct-ingress ports 30000-31000 and
the ephemeral range), each checked by binding it on the wildcard address and on `host`; a port
already handed out by this process is not handed out again. Only a process binding that very
number by hand can still take it.
"""

from __future__ import annotations

import collections
import random
import socket
from collections.abc import Iterable
from pathlib import Path

_QUIET_BAND = range(20000, 30000)
_TRIES = 200
# SystemRandom: a seeded `random` (trainers seed it) would give two processes the same sequence.
_rng = random.SystemRandom()
_handed_out: collections.deque[int] = collections.deque(maxlen=256)


def _ephemeral_range() -> range:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):  # not Linux: IANA's dynamic range
        return range(49152, 65536)


def _bindable(port: int, host: str) -> bool:
    """Whether `port` can be bound on `host` and, for IPv4, on every interface (Serve's proxy uses 0.0.0.0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    hosts = (host,) if family == socket.AF_INET6 or host == "0.0.0.0" else (host, "0.0.0.0")
    for address in hosts:
        with socket.socket(family) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def pick_free_port(candidates: Iterable[int], host: str = "127.0.0.1", *, exclude: Iterable[int] = ()) -> int | None:
    """The first of `candidates` that is bindable and neither excluded nor handed out before, or None."""
    skip = set(exclude) | set(_handed_out)
    for port in candidates:
        if port not in skip and _bindable(port, host):
            _handed_out.append(port)
            return port
    return None


def free_port(host: str = "127.0.0.1", *, exclude: Iterable[int] = ()) -> int:
    """A port nothing listens on right now, outside the kernel's ephemeral range (see the module doc)."""
    ephemeral = _ephemeral_range()
    band = [p for p in _QUIET_BAND if p not in ephemeral]
    port = pick_free_port((_rng.choice(band) for _ in range(_TRIES if band else 0)), host, exclude=exclude)
    if port is not None:
        return port
    # The band is full or inside the ephemeral range (a tuned kernel): fall back to the kernel's picks.
    port = pick_free_port((_kernel_pick(host) for _ in range(_TRIES)), host, exclude=exclude)
    if port is None:
        raise OSError(f"no free TCP port on {host}")
    return port


def _kernel_pick(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
