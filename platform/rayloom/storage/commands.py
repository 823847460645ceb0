"""`rayloom storage <action> <uri>`: inspect and repair committed artifacts by hand.

    rayloom storage versions runs/models/demo-sft        # the current version and the kept ones
    rayloom storage rollback runs/models/demo-sft        # back to the previous kept version
    rayloom storage rollback s3://b/models/x --to v-...  # or to a named one
    rayloom storage unlock runs/train/demo               # remove a crashed writer's stale lease
    rayloom storage unlock runs/train/demo --force       # any lease: only when that writer is gone

Works on local paths and s3:// URIs alike (docs/storage.md).
"""

from __future__ import annotations

import argparse

from rayloom.storage._commit import list_versions, rollback
from rayloom.storage._lease import break_lease, lease_status


def add_storage_command(commands) -> argparse.ArgumentParser:
    """Add `rayloom storage` with its actions to the rayloom CLI's sub-commands (rayloom.cli builds the tree)."""
    parser = commands.add_parser(
        "storage", help="list an artifact's versions, roll it back, or unlock a crashed writer's lease",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    versions = actions.add_parser("versions", help="the current version and the older ones kept for rollback")
    versions.add_argument("uri", help="an artifact rayloom committed (local path or s3://)")
    versions.set_defaults(run=_versions)
    back = actions.add_parser("rollback", help="make an older kept version current again")
    back.add_argument("uri")
    back.add_argument("--to", dest="to_version", help="the version to return to (default: the previous one)")
    back.set_defaults(run=_rollback)
    unlock = actions.add_parser("unlock", help="remove a stale one-writer lease (a crashed writer's)")
    unlock.add_argument("uri")
    unlock.add_argument("--force", action="store_true", help="remove the lease even if its writer may be alive")
    unlock.set_defaults(run=_unlock)
    return parser


def _versions(args: argparse.Namespace) -> int:
    found = list_versions(args.uri)
    if not found:
        print(f"{args.uri}: no committed version")
        return 1
    for index, info in enumerate(found):
        size = sum((info.files or {}).values())
        label = "current" if index == 0 else "kept"
        print(f"{info.version}  {label:7s}  {info.kind or '-':8s}  {len(info.files or {})} files, "
              f"{size / 2**20:.1f} MiB  {info.created}")
    lease = lease_status(args.uri)
    if lease is not None:
        print(f"lease: {lease.describe()}" + (f" — stale: {lease.stale_reason()}" if lease.stale_reason() else ""))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    info = rollback(args.uri, args.to_version)
    print(f"{args.uri} now reads version {info.version}")
    return 0


def _unlock(args: argparse.Namespace) -> int:
    removed = break_lease(args.uri, force=args.force)
    print(f"{args.uri}: " + (f"removed the lease {removed.describe()}" if removed else "no lease held"))
    return 0
