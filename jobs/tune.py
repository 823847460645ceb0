"""Hydra entrypoint of the `tune` job (what `rayloom submit tune` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("tune")

if __name__ == "__main__":
    main()
