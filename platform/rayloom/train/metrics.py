"""Throughput metrics: a measured peak FLOP/s, FLOPs per token, model FLOPs utilisation, memory,
and the window of steps they are measured over."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def measure_peak_flops(dtype: str = "float32", device: str = "cpu", size: int | None = None, repeats: int = 5) -> float:
    """Best observed FLOP/s of a square matmul on this worker, the denominator of MFU.

    Vendor peak numbers do not exist for an arbitrary CPU (and differ from what a process with
    N threads can reach), so the peak is measured the way the work runs: same device, dtype and
    thread count as training.
    """
    import torch

    # Big enough to saturate the device: a GPU needs far larger matrices than a CPU core.
    size = size or (8192 if device.startswith("cuda") else 1024)
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, dtype=torch_dtype, device=device)
    b = torch.randn(size, size, dtype=torch_dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def flops_per_token(num_params: int, num_trainable: int, num_embedding: int, num_layers: int, hidden_size: int,
                    seq_len: int) -> float:
    """Training FLOPs per token (PaLM, appendix B), adjusted for frozen weights.

    Every matmul weight costs 2 FLOPs per token forward and 2 for the activation gradient; only
    trainable weights cost 2 more for their own gradient. The input embedding is a lookup, not a
    matmul. Attention scores add 12 * layers * hidden * seq_len (forward + backward).
    """
    dense = num_params - num_embedding
    trainable_dense = min(num_trainable, dense)
    return 4.0 * dense + 2.0 * trainable_dense + 12.0 * num_layers * hidden_size * seq_len


def mfu(flops_per_token_value: float, positions_per_s_per_worker: float, peak_flops_per_worker: float) -> float:
    """Model FLOPs utilisation of one worker, 0..1 (positions include padding: the work was done)."""
    if peak_flops_per_worker <= 0:
        return 0.0
    return flops_per_token_value * positions_per_s_per_worker / peak_flops_per_worker


def memory_gib(device: str = "cpu") -> float:
    """Peak memory of this worker: CUDA allocator peak on GPU, peak resident set size on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


@dataclass
class ThroughputWindow:
    """The steps since the last logged one: what they processed and how long they took."""

    started: float = field(default_factory=time.perf_counter)
    # Real (non-padding) tokens over all ranks, and positions (padding included: the work was done).
    tokens: float = 0.0
    positions: int = 0
    steps: int = 0
    # Time spent waiting for data (Ray Data streaming), part of the steps' time.
    data_wait_s: float = 0.0

    def add_step(self, tokens: float, positions: int, data_wait_s: float) -> None:
        self.tokens += tokens
        self.positions += positions
        self.steps += 1
        self.data_wait_s += data_wait_s

    def metrics(self, flops_per_token_value: float, num_workers: int, peak_flops_per_worker: float) -> dict:
        elapsed = time.perf_counter() - self.started
        return {
            "tokens_per_s": self.tokens / elapsed,
            "step_time_s": elapsed / self.steps,
            "data_wait_s": self.data_wait_s / self.steps,
            "mfu": mfu(flops_per_token_value, self.positions / elapsed / num_workers, peak_flops_per_worker),
        }

    def reset(self) -> None:
        """Start a new window now."""
        self.started = time.perf_counter()
        self.tokens, self.positions, self.steps, self.data_wait_s = 0.0, 0, 0, 0.0

    def exclude(self, seconds: float) -> None:
        """Leave out time that was not the steps' own (a report, a checkpoint)."""
        self.started += seconds
