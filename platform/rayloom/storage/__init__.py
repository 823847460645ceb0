"""Local paths and s3:// URIs behind one small API, with safe, versioned commits.

S3 credentials come only from the environment / AWS config (pyarrow's and boto3's default chain);
an S3-compatible endpoint comes from AWS_ENDPOINT_URL. Every S3 request has a connect/request
timeout and a bounded retry budget (_s3.settings), and its failures are UserErrors. Nothing here
logs credentials.

Publishing (`commit_dir`, `new_version`) writes an immutable version and switches a pointer last,
under a one-writer lease, and never replaces data rayloom did not write (unless overwrite=True, and
even then a local directory is moved aside, not deleted). Readers that must see one consistent
version resolve once: `resolve_committed(uri)` / `download_committed(uri, cache)`. See docs/storage.md.
"""

from rayloom.storage._commit import (
    PendingVersion,
    check_writable,
    commit_dir,
    default_keep_versions,
    list_versions,
    new_version,
    rollback,
)
from rayloom.storage._io import (
    basename,
    copy_file,
    filesystem,
    is_s3,
    join,
    parent,
    remove_file,
    upload_dir,
    write_bytes,
    write_text,
)
from rayloom.storage._lease import (
    LeaseHeld,
    LeaseInfo,
    acquire_lease,
    break_lease,
    lease,
    lease_status,
    release_lease,
)
from rayloom.storage._marker import (
    COMMIT_MARKER,
    CommitInfo,
    is_committed,
    read_commit,
    resolve_committed,
)
from rayloom.storage._paths import check_output_path, is_within
from rayloom.storage._read import (
    download_committed,
    download_dir,
    exists,
    is_dir,
    list_files,
    local_copy,
    read_bytes,
    read_text,
    remove,
    verify_committed,
)
from rayloom.storage._s3 import s3_client, s3_endpoint, s3_filesystem
from rayloom.storage._s3 import settings as s3_settings

__all__ = [
    "COMMIT_MARKER", "CommitInfo", "LeaseHeld", "LeaseInfo", "PendingVersion", "acquire_lease", "basename",
    "break_lease", "check_output_path", "check_writable", "commit_dir", "copy_file", "default_keep_versions",
    "download_committed", "download_dir", "exists", "filesystem", "is_committed", "is_dir", "is_s3", "is_within",
    "join", "lease", "lease_status", "list_files", "list_versions", "local_copy", "new_version", "parent",
    "read_bytes", "read_commit", "read_text", "release_lease", "remove", "remove_file", "resolve_committed",
    "rollback", "s3_client", "s3_endpoint", "s3_filesystem", "s3_settings", "upload_dir", "verify_committed",
    "write_bytes", "write_text",
]
