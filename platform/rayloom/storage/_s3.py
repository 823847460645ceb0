"""S3 clients with timeouts and bounded retries, set in one place, and S3 errors as UserErrors.

Data moves through pyarrow's S3FileSystem (Ray Data reads and writes through the same objects);
the few requests pyarrow cannot make (conditional puts for leases and pointers, small listings)
go through boto3. Both get the same connect/request timeouts and the same bounded retry budget,
so a dead or unreachable server ends in a clear error instead of a hang. Credentials come only
from the environment / AWS config; nothing here logs them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from rayloom.errors import UserError

log = logging.getLogger(__name__)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise UserError(f"{name}={value!r} is not a number") from None


def settings() -> dict:
    """Timeouts (seconds) and the retry budget of every S3 request (env overrides for operators)."""
    return {
        "connect_timeout_s": _env_float("RAYLOOM_S3_CONNECT_TIMEOUT_S", 10.0),
        "request_timeout_s": _env_float("RAYLOOM_S3_REQUEST_TIMEOUT_S", 60.0),
        "max_attempts": max(1, int(_env_float("RAYLOOM_S3_MAX_ATTEMPTS", 4))),
    }


def s3_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


def _client_key() -> tuple:
    # Clients resolve credentials when built: rebuild when the environment that feeds them changes.
    creds = tuple(os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN"))
    return (s3_endpoint(), _region(), creds, tuple(sorted(settings().items())))


def s3_filesystem():
    """The pyarrow S3FileSystem for the current environment (one per endpoint/credentials)."""
    return _s3_filesystem(_client_key())


@functools.lru_cache(maxsize=8)
def _s3_filesystem(key: tuple):
    from pyarrow import fs as pafs  # pyarrow is heavy; only S3 and Ray Data paths need it

    endpoint, region, _, items = key
    opts = dict(items)
    kwargs: dict = {
        "connect_timeout": opts["connect_timeout_s"],
        "request_timeout": opts["request_timeout_s"],
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=opts["max_attempts"]),
    }
    if endpoint:
        url = urlparse(endpoint)
        kwargs["endpoint_override"] = url.netloc
        kwargs["scheme"] = url.scheme or "https"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def s3_client():
    """A boto3 S3 client with the same timeouts and retry budget as the pyarrow filesystem."""
    return _s3_client(_client_key())


@functools.lru_cache(maxsize=8)
def _s3_client(key: tuple):
    import boto3  # boto3 is slow to import; only S3 paths need it
    from botocore.config import Config

    endpoint, region, _, items = key
    opts = dict(items)
    config = Config(connect_timeout=opts["connect_timeout_s"], read_timeout=opts["request_timeout_s"],
                    retries={"max_attempts": opts["max_attempts"], "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region or None, config=config)


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; the key has no leading or trailing '/'."""
    parsed = urlparse(str(uri))
    return parsed.netloc, parsed.path.strip("/")


def _explain(uri: str, action: str, exc: BaseException) -> UserError:
    opts = settings()
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"S3 {action} of {uri} failed: {detail}. Check storage.s3_endpoint_url / AWS_ENDPOINT_URL "
        f"({s3_endpoint() or 'AWS default'}), the credentials in the environment and the network "
        f"(each request: connect timeout {opts['connect_timeout_s']:g} s, request timeout "
        f"{opts['request_timeout_s']:g} s, at most {opts['max_attempts']} attempts)."
    )


@contextmanager
def s3_errors(uri: str, action: str) -> Iterator[None]:
    """Turn network/credential failures of S3 requests into a UserError that names the URI.

    A missing object stays a FileNotFoundError (callers branch on it); local paths pass through.
    """
    if not str(uri).startswith("s3://"):
        yield
        return
    try:
        yield
    except (FileNotFoundError, FileExistsError, UserError):
        raise
    except OSError as exc:
        raise _explain(uri, action, exc) from exc
    except Exception as exc:
        if _is_botocore_error(exc):
            raise _explain(uri, action, exc) from exc
        raise


def _is_botocore_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3"))


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
