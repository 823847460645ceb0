"""Secrets never travel by value: what may leave this machine in a job, a Serve config or a manifest.

Everything that travels (a job's runtime_env env vars, its metadata and entrypoint, the overrides
the cluster writes to .hydra/overrides.yaml, a Serve config, a KubeRay manifest) is checked here:
- environment variables come from an allow-list (rayloom.runtime) or from `cluster.env`, whose
  names and values are checked;
- a name that looks like a credential (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, AUTH, ... and
  whatever `serve.api_key_env` / `eval.*api_key_env` name) is refused when it carries a value;
- a value that looks like one (a URI with user:password@, a bearer token, an AWS access key id, a
  Hugging Face / GitHub / OpenAI token, a private key, a long random string) is refused wherever
  it appears.
A refusal is a UserError that names the place (never the value) and says how to pass the secret
by reference. Names that *refer* to a secret (`*_FILE`, `*_PATH`, `*_ENV`, ...) pass: that is the
way to do it. `redact_uri` / `redact_text` strip credentials from what is logged.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rayloom.errors import UserError

HOW_TO_PASS = ("secrets are never sent by value (with a job, a Serve config or a manifest): provide it on the cluster "
               "and pass it by reference - an IAM role / instance profile (AWS), a Kubernetes secret (secretKeyRef), a file "
               "path (serve.api_key_file, cluster.auth_token_path), or the cluster's environment, naming the "
               "variable in cluster.secret_env")

# Words (of a name split at _, -, . and camelCase) that mark a credential.
_SECRET_WORDS = frozenset({"KEY", "KEYS", "APIKEY", "ACCESSKEY", "PRIVATEKEY", "TOKEN", "SECRET", "SECRETS",
                           "PASSWORD", "PASSWORDS", "PASSWD", "PASS", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS",
                           "CREDS", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"})
# Always credentials, whatever the rule above says.
_KNOWN_SECRETS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD",
                            "MLFLOW_TRACKING_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                            "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN", "RAYLOOM_API_KEY", "OPENAI_API_KEY",
                            "GITHUB_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_KEY", "RAYLOOM_JUDGE_API_KEY"})
# A name ending in one of these refers to a secret (a file, a variable name, a mode), it is not one.
_REFERENCE_SUFFIXES = ("FILE", "PATH", "DIR", "ENV", "MODE", "URL", "ENDPOINT", "REGION", "PROFILE", "NAME")
# References whose name contains a secret word and no reference suffix.
_KNOWN_REFERENCES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                               "AWS_CONTAINER_CREDENTIALS_FULL_URI"})

_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a URI with a password (user:password@)", re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s@:]*:[^/\s@]+@")),
    ("a bearer token", re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/\-]{8,}=*")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{20,}")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("an API key (sk-...)", re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)
_CANDIDATE = re.compile(r"[A-Za-z0-9_\-+=]{32,}")


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.upper()) if w]


def is_reference_name(name: str) -> bool:
    """`X_FILE`, `X_PATH`, `api_key_env`, ...: names a place a secret is found, not the secret."""
    words = _words(name)
    return name.upper() in _KNOWN_REFERENCES or bool(words) and words[-1] in _REFERENCE_SUFFIXES


def looks_like_secret_name(name: str, secret_names: Iterable[str] = ()) -> bool:
    """True for a name that holds a credential: HF_TOKEN, MY_API_KEY, hfToken, db_password, or any
    name in `secret_names` (e.g. the configured serve.api_key_env)."""
    if name in set(secret_names) or name.upper() in _KNOWN_SECRETS:
        return True
    if is_reference_name(name):
        return False
    return any(word in _SECRET_WORDS for word in _words(name))


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _random_looking(token: str) -> bool:
    """A long random string (a generated key): mixed case and digits, high entropy, and not words
    joined by - or _ (model names, run names). Hex hashes and UUIDs (one case) are not flagged."""
    if not (any(c.islower() for c in token) and any(c.isupper() for c in token) and any(c.isdigit() for c in token)):
        return False
    if max(len(piece) for piece in re.split(r"[-_]", token)) < 16:
        return False
    return _entropy(token) >= 4.0


def secret_value_kind(value: str) -> str:
    """What kind of credential `value` holds or contains ("" when none): the reason for a refusal."""
    for kind, pattern in _VALUE_PATTERNS:
        if pattern.search(value):
            return kind
    for match in _CANDIDATE.finditer(value):
        if _random_looking(match.group()):
            return "a long random string (a key or token?)"
    return ""


def refuse(where: str, reason: str) -> UserError:
    return UserError(f"{where} {reason}; {HOW_TO_PASS}")


def check_value(value: Any, where: str) -> None:
    if isinstance(value, str):
        kind = secret_value_kind(value)
        if kind:
            raise refuse(where, f"holds {kind} (refused, its value is not shown)")


def check_env(env: Mapping[str, Any], where: str = "cluster.env", secret_names: Iterable[str] = ()) -> None:
    """Environment variables that travel: no credential names, no credential-looking values."""
    names = set(secret_names)
    for name, value in env.items():
        if looks_like_secret_name(str(name), names):
            raise refuse(f"{where}.{name}", "looks like a credential and is refused by value")
        check_value(value, f"{where}.{name}")


def configured_secret_names(cfg: Any) -> set[str]:
    """Variable names the config says hold secrets: every `*api_key_env` field (serve, eval, the
    judge, ...) and cluster.secret_env, whatever they are called."""
    names: set[str] = set()
    for path, value in _walk(cfg):
        last = path.rsplit(".", 1)[-1]
        if isinstance(value, str) and value and last.endswith("_env") and "key" in last:
            names.add(value)
    names.update(getattr(getattr(cfg, "cluster", None), "secret_env", None) or ())
    return names


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf value) of a config tree: dataclasses, mappings and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, obj


def _free_form_entries(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every entry of a free-form mapping inside a config tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _free_form_entries(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield path, str(key), value
            yield from _free_form_entries(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _free_form_entries(value, f"{path}[{i}]")


def _carries_value(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_config(cfg: Any, where: str = "the config") -> None:
    """A composed config that is about to travel: schema fields never hold secrets by name (their
    names are reviewed, see tests/unit/test_secrets.py), so every string is checked by value, and
    the keys of free-form maps (cluster.env, serve.engine_kwargs, ...) by name as well."""
    names = configured_secret_names(cfg)
    for path, key, value in _free_form_entries(cfg):
        if _carries_value(value) and looks_like_secret_name(key, names):
            raise refuse(f"{where}: {path}.{key}", "looks like a credential and is refused by value")
    for path, value in _walk(cfg):
        check_value(value, f"{where}: {path}")


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def is_schema_field(key: str, schema: type) -> bool:
    """True when the dotted `key` ends at a field of the typed schema (not inside a free-form map)."""
    current: Any = schema
    for part in re.sub(r"\[[^\]]*\]", "", key).split("."):
        current = _unwrap(current)
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            return False
        hints = typing.get_type_hints(current)
        if part not in hints:
            return False
        current = hints[part]
    return True


def override_key(override: str) -> str:
    """`+cluster.env.X=v` -> `cluster.env.X` (Hydra's +, ++ and ~ prefixes stripped)."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def check_overrides(overrides: Iterable[str], where: str = "override", schema: type | None = None,
                    secret_names: Iterable[str] = ()) -> None:
    """Command-line overrides that travel (entrypoint, job metadata, .hydra/overrides.yaml, a
    manifest header): no credential-looking key outside the typed schema, no credential value."""
    if schema is None:
        from rayloom.config import RayloomConfig  # the root schema (cheap: dataclasses only)
        schema = RayloomConfig
    names = set(secret_names)
    for override in overrides:
        key = override_key(override)
        value = override.split("=", 1)[1] if "=" in override else ""
        last = re.split(r"[.\[]", key)[-1] if key else ""
        if value.strip() and not is_schema_field(key, schema) and looks_like_secret_name(last, names):
            raise refuse(f"{where} {key}", "looks like a credential and is refused by value")
        if value:
            check_value(value, f"{where} {key}")
        for name in names:
            # A mapping value such as cluster.env={MY_KEY: ...} names the secret inside the value.
            if value and re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}\s*:", value):
                raise refuse(f"{where} {key}", f"sets {name}, which holds a secret, by value")


def redact_uri(uri: str) -> str:
    """`https://user:pw@host/x?token=t` -> `https://***@host/x?token=***`: safe to log or store.
    Anything without credentials comes back unchanged."""
    out = re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]*@", r"\1***@", uri)

    def _param(match: re.Match[str]) -> str:
        return f"{match.group(1)}{match.group(2)}=***" if looks_like_secret_name(match.group(2)) else match.group(0)

    return re.sub(r"([?&;])([^=&;#]+)=([^&;#]*)", _param, out)


def redact_text(text: str) -> str:
    """Text with every credential-looking value replaced by ***: for log lines and error messages."""
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@]+@", r"\1***@", text)
    for _kind, pattern in _VALUE_PATTERNS[1:]:
        text = pattern.sub("***", text)
    return _CANDIDATE.sub(lambda m: "***" if _random_looking(m.group()) else m.group(), text)
