"""The embedded Ray starts as configured, with token auth, and workers see the stdlib `platform`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_embedded_ray_is_sized_and_authenticated(ray_local):
    import os

    assert ray_local.cluster_resources()["CPU"] == 4
    token = os.path.expanduser("~/.ray/auth_token")
    assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled" and (os.path.exists(token) or "RAY_AUTH_TOKEN" in os.environ)


def test_import_platform_inside_a_ray_task_is_the_standard_library(ray_local):
    @ray_local.remote
    def where():
        import platform

        import rayloom

        return platform.__file__, callable(platform.python_version), rayloom.__file__

    platform_file, ok, rayloom_file = ray_local.get(where.remote())
    assert platform_file.endswith("platform.py") and "site-packages" not in platform_file and ok
    assert rayloom_file.endswith("rayloom/__init__.py")


def test_embedded_workers_run_rayloom_set_up_hook(ray_local):
    """Every worker of the embedded cluster (no dashboard) has run rayloom.ray_worker_setup."""
    from rayloom.ray_worker_setup import CLEANER_LOGGER

    @ray_local.remote(num_cpus=0)
    def filters():
        import logging

        return [type(f).__name__ for f in logging.getLogger(CLEANER_LOGGER).filters]

    assert ray_local.get(filters.remote()) == ["_DropMessage"]
