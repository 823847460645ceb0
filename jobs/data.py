"""Hydra entrypoint of the `data` job (what `rayloom submit data` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("data")

if __name__ == "__main__":
    main()
