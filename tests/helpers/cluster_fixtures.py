"""A real local Ray head for the cluster tests: `rayloom cluster up` on free ports with its own
token file and state dir, stopped by its own process session (never `ray stop`, which would end
every Ray on the machine)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rayloom.cluster import cluster_main
from rayloom.cluster import head as head_mod
from rayloom.ports import free_port


@contextmanager
def local_head(state_dir: Path, *extra: str):
    token = state_dir / "auth_token"
    argv = ["up", "--state-dir", str(state_dir), "--port", str(free_port()),
            "--dashboard-port", str(free_port()), *extra, f"cluster.auth_token_path={token}"]
    assert cluster_main(argv) == 0
    state = head_mod.read_state(state_dir)
    try:
        yield state
    finally:
        assert cluster_main(["down", "--state-dir", str(state_dir)]) == 0
        assert head_mod.session_processes(state) == [], "processes of the head's session outlived `cluster down`"
        assert not Path(state.temp_dir).exists()
