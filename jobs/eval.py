"""Hydra entrypoint of the `eval` job (what `rayloom submit eval` runs on a cluster)."""

import _path  # noqa: F401  (makes rayloom importable from a bare checkout)

from rayloom.entry import hydra_entrypoint

main = hydra_entrypoint("eval")

if __name__ == "__main__":
    main()
