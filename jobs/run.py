"""Hydra entrypoint of the `run` job (what `rayloom submit run` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("run")

if __name__ == "__main__":
    main()
