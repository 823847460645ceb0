"""`rayloom data` on a local multi-node Ray cluster (head + 2 worker nodes on this machine, through
ray.cluster_utils.Cluster) writes exactly what the single-node run writes: same manifest, same shard
bytes, same quarantine. The corpus is split into many read units so every stage spreads over the
nodes, and it holds exact and near duplicates in different files, so dedup groups across nodes."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from helpers.data_fixtures import write_golden
from helpers.multinode import leave_embedded_ray, restore_embedded_ray

from rayloom import storage
from rayloom.config import ClusterConfig, SourceConfig, compose
from rayloom.data import build_dataset
from rayloom.data.pipeline import data_context

pytestmark = pytest.mark.integration


def _big_file(path: Path) -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(800)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 120))) for _ in range(600)]
    lines = []
    for i in range(1500):
        doc = docs[i % len(docs)] if i % 5 else docs[rng.randrange(len(docs))]
        if i % 7 == 0:
            d = doc.split()
            d[len(d) // 2] = "changed"
            doc = " ".join(d)
        lines.append(json.dumps({"text": doc}))
    path.write_text("\n".join(lines) + "\n")


def _run(root: Path, sources: list[dict], name: str, nodes: list[int]) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from rayloom.runtime import init_ray

    was_embedded = leave_embedded_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": nodes[0]})
    for cpus in nodes[1:]:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    try:
        init_ray(ClusterConfig(address=cluster.address))
        assert len([n for n in ray.nodes() if n["Alive"]]) == len(nodes)
        cfg = compose("data", ["model=tiny-2l", f"data.name={name}", "data.seq_len=128", "data.filters.min_chars=8",
                               "data.rows_per_shard=16", "data.val_fraction=0.1", "data.progress_bars=false",
                               "data.demo=''", "data.read_block_bytes=16384", "data.num_tokenize_actors=2",
                               f"storage.root={root / 'runs'}"])
        data = dataclasses.replace(cfg.data, sources=[SourceConfig(**s) for s in sources])
        output = str(root / "runs" / "data" / name)
        with data_context(data):
            result = build_dataset(data, cfg.model, output, root=cfg.storage.root)
        version = storage.resolve_committed(output)
        files = {f: storage.read_bytes(storage.join(version, f)) for f in storage.list_files(version)
                 if f != storage.COMMIT_MARKER}
        manifest = result.manifest.to_dict()
        return {"manifest": {**manifest, "name": None, "quarantine": None}, "files": {**files, "manifest.json": None},
                "quarantine": Path(result.quarantine).read_text()}
    finally:
        ray.shutdown()
        cluster.shutdown()
        restore_embedded_ray(was_embedded)


def test_three_nodes_write_what_one_node_writes(tmp_path):
    spec = write_golden(tmp_path / "src")
    _big_file(tmp_path / "src" / "big.jsonl")
    sources = [*spec["sources"], {"path": str(tmp_path / "src" / "big.jsonl"), "schema": "text"}]
    single = _run(tmp_path, sources, "one", [3])
    multi = _run(tmp_path, sources, "three", [1, 1, 1])
    assert single["manifest"]["counts"]["deduped"] > 100
    assert len(single["manifest"]["splits"]["train"]["files"]) > 10
    assert multi["manifest"] == single["manifest"]
    assert multi["files"].keys() == single["files"].keys()
    for name, data in single["files"].items():
        assert multi["files"][name] == data, name
    assert multi["quarantine"] == single["quarantine"]
