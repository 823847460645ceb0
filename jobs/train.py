"""Hydra entrypoint of the `train` job (what `rayloom submit train` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("train")

if __name__ == "__main__":
    main()
