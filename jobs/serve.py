"""Hydra entrypoint of the `serve` job (what `rayloom submit serve` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("serve")

if __name__ == "__main__":
    main()
