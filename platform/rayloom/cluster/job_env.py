"""`python -m rayloom.cluster.job_env NAME...`: runs first in a submitted job that declares
cluster.secret_env, and fails it with a clear message when the cluster does not provide a secret.

Secrets never travel with the job; the nodes get them from an IAM role, a Kubernetes secret or a
file. Only whether each one is set is checked and reported, never its value.
"""

from __future__ import annotations

import os
import sys


def missing_secrets(names: list[str]) -> list[str]:
    return [name for name in names if not os.environ.get(name)]


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    missing = missing_secrets(names)
    if missing:
        print(f"rayloom job: error: the cluster does not provide {', '.join(missing)} (listed in "
              "cluster.secret_env). Provide them on the nodes (IAM role, Kubernetes secret, env file); "
              "secrets are never sent with a job.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
