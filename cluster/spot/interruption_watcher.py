#!/usr/bin/env python3
"""Spot interruption notice -> Ray drain, for nodes started by the Ray cluster launcher.

EC2 announces a spot interruption about two minutes ahead in the instance metadata service:
`/latest/meta-data/spot/instance-action` answers 404 until then, and then
`{"action": "terminate"|"stop"|"hibernate", "time": "2026-12-06T05:02:05Z"}`. This script polls it
(IMDSv2: a session token from `PUT /latest/api/token`), and on a notice runs the drain command once
with the seconds left, so Ray marks the node as draining with a deadline and Ray Train sees the
preemption (checkpoint now, then continue on the remaining nodes). Then it exits.

The default drain command is `drain_node.py` beside this file, which finds this node's Ray id and
runs `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N`.
`--drain-command` replaces it: a shell-like string in which `{deadline}` (whole seconds left, >= 0),
`{action}` and `{time}` are substituted.

On an instance that is not spot (`/latest/meta-data/instance-life-cycle` != "spot") it exits at
once, so it can be started on every worker. Standard library only: it runs before anything else is
importable. cluster/aws-gpu.yaml starts it in the node container after `ray start`; the systemd unit
beside it runs it on a host. See docs/spot.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("rayloom.spot")

DEFAULT_IMDS = "http://169.254.169.254"
TOKEN_TTL_S = 21600
DRAIN_NODE = Path(__file__).resolve().with_name("drain_node.py")
DEFAULT_DRAIN = (f"{shlex.quote(sys.executable)} {shlex.quote(str(DRAIN_NODE))} --deadline-seconds {{deadline}} "
                 "--reason-message 'EC2 spot interruption notice: {action} at {time}'")


class ImdsError(Exception):
    pass


class Imds:
    """IMDSv2 client: a session token, refreshed before it expires or when the service says 401."""

    def __init__(self, base: str, timeout_s: float = 2.0, token_ttl_s: int = TOKEN_TTL_S):
        self.base = base.rstrip("/")
        self.timeout_s = timeout_s
        self.token_ttl_s = token_ttl_s
        self._token: str | None = None
        self._token_at = 0.0

    def _request(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (fixed IMDS URL)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except (urllib.error.URLError, OSError) as exc:
            raise ImdsError(f"instance metadata service at {self.base} unreachable: {exc}") from None

    def token(self) -> str:
        if self._token is None or time.monotonic() - self._token_at > self.token_ttl_s / 2:
            request = urllib.request.Request(f"{self.base}/latest/api/token", method="PUT",
                                             headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_s)})
            status, body = self._request(request)
            if status != 200 or not body:
                raise ImdsError(f"IMDSv2 token request answered {status}")
            self._token, self._token_at = body.strip(), time.monotonic()
        return self._token

    def get(self, path: str) -> str | None:
        """The body at /latest/meta-data/<path>, or None when it does not exist (404)."""
        for attempt in range(2):
            request = urllib.request.Request(f"{self.base}/latest/meta-data/{path}",
                                             headers={"X-aws-ec2-metadata-token": self.token()})
            status, body = self._request(request)
            if status == 200:
                return body
            if status == 404:
                return None
            if status == 401 and attempt == 0:
                self._token = None  # expired or rotated: fetch a new one and retry once
                continue
            raise ImdsError(f"GET {path} answered {status}")
        raise ImdsError(f"GET {path}: token refused twice")


def parse_notice(body: str) -> tuple[str, datetime]:
    notice = json.loads(body)
    # timezone.utc, not datetime.UTC: this runs on a host python3 that may predate 3.11.
    when = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)  # noqa: UP017
    return str(notice["action"]), when


def seconds_left(when: datetime, now: float) -> int:
    return max(0, math.floor(when.timestamp() - now))


def drain_argv(template: str, deadline: int, action: str, when: datetime) -> list[str]:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [arg.format(deadline=deadline, action=action, time=stamp) for arg in shlex.split(template)]


def drain(template: str, action: str, when: datetime, attempts: int, retry_s: float) -> int:
    """Run the drain command, retrying a failure while the deadline is in the future."""
    for attempt in range(1, attempts + 1):
        deadline = seconds_left(when, time.time())
        argv = drain_argv(template, deadline, action, when)
        log.warning("spot interruption notice: %s at %s (%d s left); draining: %s",
                    action, when.isoformat(), deadline, shlex.join(argv))
        result = subprocess.run(argv, check=False)
        if result.returncode == 0:
            return 0
        log.error("drain command exited %d (attempt %d/%d)", result.returncode, attempt, attempts)
        if deadline == 0:
            break
        time.sleep(retry_s)
    return 1


def watch(imds: Imds, template: str, poll_s: float, *, require_spot: bool = True,
          attempts: int = 3, retry_s: float = 2.0) -> int:
    if require_spot:
        life_cycle = (imds.get("instance-life-cycle") or "").strip()
        if life_cycle != "spot":
            log.info("instance-life-cycle is %r, not spot: nothing to watch", life_cycle)
            return 0
    log.info("watching %s/latest/meta-data/spot/instance-action every %.1f s", imds.base, poll_s)
    failures = 0
    while True:
        try:
            body = imds.get("spot/instance-action")
            failures = 0
        except ImdsError as exc:
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.error("%s (failure %d; still polling)", exc, failures)
            body = None
        if body:
            action, when = parse_notice(body)
            return drain(template, action, when, attempts, retry_s)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imds-url", default=DEFAULT_IMDS, help="instance metadata service base URL")
    parser.add_argument("--drain-command", default=DEFAULT_DRAIN,
                        help="command run once on a notice; {deadline}, {action}, {time} are substituted")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (AWS suggests 5)")
    parser.add_argument("--any-instance", action="store_true", help="watch even if the instance is not spot")
    parser.add_argument("--attempts", type=int, default=3, help="tries of a failing drain command")
    parser.add_argument("--retry-interval", type=float, default=2.0, help="seconds between those tries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    imds = Imds(args.imds_url)
    try:
        return watch(imds, args.drain_command, args.poll_interval, require_spot=not args.any_instance,
                     attempts=args.attempts, retry_s=args.retry_interval)
    except ImdsError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
