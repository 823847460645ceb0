"""API keys for the endpoint: where they come from and how a presented key is checked.

Keys live in an environment variable and/or a secret file (one key per line, '#' comments),
never in a config file. What travels to the Serve replicas is `AuthSettings`: the *names* of
the variable and file (read again on the replica's node, so a Kubernetes secret works) plus
SHA-256 digests of the keys the deploying process could see (so an embedded Ray started before
the key was exported still accepts it). A key itself is never stored, pickled or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.errors import UserError

log = logging.getLogger(__name__)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_api_keys(env_name: str, file_path: str) -> list[str]:
    """Keys from `$env_name` (comma-separated allowed) and from `file_path` (one per line)."""
    keys: list[str] = []
    if env_name:
        keys += [k.strip() for k in os.environ.get(env_name, "").split(",") if k.strip()]
    if file_path:
        path = Path(file_path).expanduser()
        if path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
    return keys


@dataclass(frozen=True)
class AuthSettings:
    """Picklable: names and digests only."""

    require_api_key: bool = True
    api_key_env: str = "RAYLOOM_API_KEY"
    api_key_file: str = ""
    key_digests: tuple[str, ...] = field(default_factory=tuple)

    def verifier(self) -> ApiKeyVerifier:
        """Build the checker on the node that serves requests (re-reads env and file there)."""
        digests = set(self.key_digests)
        digests.update(key_digest(k) for k in read_api_keys(self.api_key_env, self.api_key_file))
        return ApiKeyVerifier(frozenset(digests), enabled=self.require_api_key)


@dataclass(frozen=True)
class ApiKeyVerifier:
    digests: frozenset[str]
    enabled: bool = True

    def check_ready(self) -> None:
        if self.enabled and not self.digests:
            raise RuntimeError("serve.require_api_key is true but no API key was found on this node "
                               "(environment variable / key file named in the serve config)")

    def allows(self, authorization_header: str | None) -> bool:
        if not self.enabled:
            return True
        presented = bearer_token(authorization_header)
        if not presented:
            return False
        digest = key_digest(presented)
        # Compare against every digest (constant time each) so timing says nothing about which.
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        return ""
    scheme, _, token = authorization_header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def resolve_auth(require_api_key: bool, api_key_env: str, api_key_file: str) -> AuthSettings:
    """AuthSettings for a deploy from this process, or a UserError when keys are required and absent."""
    if api_key_file and not Path(api_key_file).expanduser().is_file():
        raise UserError(f"serve.api_key_file={api_key_file!r} does not exist")
    keys = read_api_keys(api_key_env, api_key_file)
    if require_api_key and not keys:
        raise UserError(
            f"serve.require_api_key is true but no API key was found: export {api_key_env or '<serve.api_key_env>'}=<key> "
            "or set serve.api_key_file to a file with one key per line (or serve.require_api_key=false for a "
            "local, unauthenticated endpoint)"
        )
    if not require_api_key:
        log.warning("serve.require_api_key=false: the endpoint accepts requests without an API key")
    return AuthSettings(require_api_key=require_api_key, api_key_env=api_key_env, api_key_file=api_key_file,
                        key_digests=tuple(sorted({key_digest(k) for k in keys})))
