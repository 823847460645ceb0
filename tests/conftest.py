"""Shared fixtures: a real S3-compatible server, a session Ray cluster, tiny models built from config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_env(tmp_path_factory):
    """Tests never reach the network or a user's caches."""
    cache = tmp_path_factory.mktemp("rayloom-cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAYLOOM_CACHE_DIR", str(cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's server mode) on 127.0.0.1, with a bucket.

    Clients (boto3, pyarrow) talk to it over HTTP exactly as they would to AWS; credentials are
    dummy values set in the environment, the only place rayloom reads them from.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                           "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}.items():
            env.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="rayloom-test")
        yield {"endpoint": endpoint, "bucket": "rayloom-test"}
        server.stop()


@pytest.fixture(scope="session")
def tiny_config():
    from rayloom.config import compose

    return compose("run", ["model=tiny-2l"])


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_config) -> Path:
    from rayloom.models import resolve_model_dir

    return resolve_model_dir(tiny_config.model)


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the session (4 logical CPUs, as rayloom starts it)."""
    import ray

    from rayloom.config import ClusterConfig
    from rayloom.runtime import init_ray

    started = init_ray(ClusterConfig(num_cpus=4))
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def copy_of(tmp_path):
    def _copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return _copy
