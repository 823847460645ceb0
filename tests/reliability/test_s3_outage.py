"""The S3 server goes away in the middle of an upload: a clear error, never a committed partial."""

from __future__ import annotations

import pytest

from rayloom import storage
from rayloom.ports import free_port

pytestmark = pytest.mark.reliability


def test_server_stopped_mid_upload_then_restarted(rel, s3_server, tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    # A second server on its own port over the same in-process moto state, so stopping it leaves
    # the session's server alone; the bucket is shared.
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    env = {"AWS_ENDPOINT_URL": endpoint, "RAYLOOM_S3_MAX_ATTEMPTS": "2", "RAYLOOM_S3_CONNECT_TIMEOUT_S": "2"}
    dest = f"s3://{s3_server['bucket']}/outage/model"
    old = {"config.json": "old", "w.bin": "o" * 64}
    new = {f"shard-{i}.bin": str(i) * 1000 for i in range(5)}
    try:
        storage.commit_dir(rel.tree(tmp_path / "old", old), dest)
        writer = rel.PausedWriter(rel.tree(tmp_path / "new", new), dest, go=tmp_path / "go", after=2, env=env)
        server.stop()
        writer.resume()
        code, err = writer.wait()
        assert code == 1 and "S3 " in err and "failed" in err and endpoint in err, err
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    try:
        assert rel.read_all(dest) == old, "the pointer never moved to the partial upload"
        storage.verify_committed(dest)
        storage.commit_dir(tmp_path / "new", dest)  # the dead writer's lease is taken over
        assert rel.read_all(dest) == new
    finally:
        server.stop()
