"""The embedded cluster's worker set-up hook drops the one warning its missing state API causes."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

from rayloom import ray_worker_setup
from rayloom.runtime import EMBEDDED_WORKER_SETUP


def test_the_hook_drops_the_cleaners_state_api_warning_and_nothing_else(caplog):
    ray_worker_setup.embedded_cluster()
    ray_worker_setup.embedded_cluster()  # a second call adds no second filter
    logger = logging.getLogger(ray_worker_setup.CLEANER_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=ray_worker_setup.CLEANER_LOGGER):
        logger.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        logger.warning("Failed to remove placement group pg-1")
    assert [r.getMessage() for r in caplog.records] == ["Failed to remove placement group pg-1"]


def test_the_names_match_the_installed_ray():
    """The logger is the cleaner module's own and the message is the one it logs (a renamed module in
    a newer Ray would make the filter silently useless)."""
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])  # ray itself is not imported
    module = ray_dir.parent / (ray_worker_setup.CLEANER_LOGGER.replace(".", "/") + ".py")
    source = module.read_text()
    assert "logging.getLogger(__name__)" in source and ray_worker_setup.CLEANER_UNAVAILABLE in source


def test_ray_is_given_a_hook_it_can_import():
    module, _, function = EMBEDDED_WORKER_SETUP.rpartition(".")
    assert getattr(importlib.import_module(module), function) is ray_worker_setup.embedded_cluster
