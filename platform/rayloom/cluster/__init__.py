"""Ray clusters: job submission (`rayloom submit`, `rayloom jobs`), the local head and fake-GPU
autoscaling cluster (`rayloom cluster`), and rendering of launcher / KubeRay configs.

Public face: `submit_main`, `jobs_main`, `cluster_main` (each runs its command from an argv list)
and `add_submit_command`, `add_jobs_command`, `add_cluster_command` (each adds its command to the
rayloom CLI's argparse tree). Importing this package does not import Ray.
"""

from rayloom.cluster.commands import (
    CommandParser,
    add_cluster_command,
    add_jobs_command,
    add_submit_command,
    cluster_main,
    jobs_main,
    submit_main,
)

__all__ = ["CommandParser", "add_cluster_command", "add_jobs_command", "add_submit_command", "cluster_main",
           "jobs_main", "submit_main"]
