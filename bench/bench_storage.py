"""Storage: the versioned commit protocol vs a plain copy, for a 100 MB model directory.

Local disk and a real S3-compatible server (moto's server mode on 127.0.0.1, the one the tests
use), same files, same machine, one run. Commit: rayloom's `storage.commit_dir` (lease, a new
immutable version, files fsynced, sizes checked, manifest + pointer written last, older versions
pruned) re-committing to one destination, vs a plain copy into a fresh folder/prefix (shutil.copytree
locally, pyarrow `copy_files` to S3, what `commit_dir` did before versioning minus its marker). Read:
resolve the pointer and read every file of that version (S3: `download_committed` into a fresh
cache, sizes verified) vs reading the files directly (S3: pyarrow `copy_files` download).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from harness import Result, repeat

DESCRIPTION = "storage: versioned commit + read vs plain copy of a 100 MB model directory, local and S3 (moto)"


def _model_dir(root: Path, total_mb: int) -> Path:
    """A model-shaped directory: two weight shards, an index, configs and a tokenizer file."""
    out = root / "model"
    out.mkdir()
    half = total_mb * 2**20 // 2
    for n in (1, 2):
        (out / f"model-0000{n}-of-00002.safetensors").write_bytes(os.urandom(half))
    (out / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (out / "config.json").write_text('{"model_type": "llama"}')
    (out / "generation_config.json").write_text("{}")
    (out / "tokenizer.json").write_bytes(os.urandom(2 * 2**20))
    return out


def _read_tree(folder: str) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                while chunk := handle.read(8 * 2**20):
                    total += len(chunk)
    return total


def _measure(label: str, src: Path, base: str, scratch: Path, size_mb: float, repeats: int) -> list[dict]:
    from rayloom import storage

    dest = storage.join(base, "models", "bench")
    s3 = storage.is_s3(base)

    def versioned_commit():
        storage.commit_dir(src, dest, kind="model")

    plain_targets: list[str] = []

    def plain_copy():
        target = storage.join(base, "plain", uuid.uuid4().hex[:8])
        plain_targets.append(target)
        if s3:
            storage.upload_dir(src, target)
        else:
            shutil.copytree(src, target)

    def versioned_read():
        if s3:
            cache = scratch / f"cache-{uuid.uuid4().hex[:8]}"
            _read_tree(str(storage.download_committed(dest, cache)))
            shutil.rmtree(cache)
        else:
            _read_tree(storage.resolve_committed(dest))

    def plain_read():
        if s3:
            local = scratch / f"plain-{uuid.uuid4().hex[:8]}"
            local.mkdir()
            from pyarrow import fs as pafs

            fs, path = storage.filesystem(plain_targets[0])
            pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            _read_tree(str(local))
            shutil.rmtree(local)
        else:
            _read_tree(plain_targets[0])

    rows = []
    for system, fn in (("versioned commit", versioned_commit), ("plain copy", plain_copy),
                       ("versioned read", versioned_read), ("plain read", plain_read)):
        timing = repeat(fn, repeats=repeats, warmup=1)
        rows.append({"system": f"{label}: {system}", "median_s": timing["median_s"], "min_s": timing["min_s"],
                     "MB_per_s": size_mb / timing["median_s"], "runs": timing["runs"]})
        if fn is plain_read:
            for target in plain_targets:
                storage.remove(target)
    return rows


def run(quick: bool = False) -> Result:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 request otherwise

    total_mb = 10 if quick else 100
    repeats = 2 if quick else 3
    scratch = Path(tempfile.mkdtemp(prefix="rayloom-bench-storage-"))
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_REGION")}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        import boto3

        host, port = server.get_host_and_port()
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1"})
        boto3.client("s3").create_bucket(Bucket="bench")
        src = _model_dir(scratch, total_mb)
        size_mb = sum(f.stat().st_size for f in src.iterdir()) / 2**20
        rows = _measure("local", src, str(scratch / "runs"), scratch, size_mb, repeats)
        rows += _measure("S3 (moto)", src, "s3://bench/runs", scratch, size_mb, repeats)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    by = {row["system"]: row["MB_per_s"] for row in rows}
    ratios, goals = {}, {}
    for where in ("local", "S3 (moto)"):
        for op in ("commit", "read"):
            key = f"{where} {op}: versioned / plain (MB/s)"
            ratios[key] = by[f"{where}: versioned {op}"] / by[f"{where}: plain {'copy' if op == 'commit' else op}"]
            goals[key] = ">= 0.9"
    return Result(
        name="storage", description=DESCRIPTION, rows=rows, ratios=ratios, goals=goals,
        notes=[f"{size_mb:.0f} MB directory (2 weight shards + tokenizer + configs), median of {repeats} runs "
               "after 1 warm-up.",
               "Versioned commit re-commits to one destination each run, so it includes the lease, fsync of "
               "every file, the size check, manifest + pointer and pruning the version beyond keep_versions=2 "
               "(its names are gone when the commit returns; a background thread then closes the handles "
               "that free its large files' blocks, overlapping the next run).",
               "S3 is moto's server in this process (HTTP on 127.0.0.1): it measures request overhead, not "
               "AWS bandwidth."],
    )
