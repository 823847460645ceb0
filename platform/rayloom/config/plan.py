"""Plan group: what `rayloom plan` (rayloom.planner) plans against, and the training preflight."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import fraction, non_negative, one_of, positive, require

# Public architecture shapes the planner knows by name, for sizing a model that is not on this machine.
KNOWN_SHAPES = ("", "tinyllama-1.1b", "llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b")
# Hardware rows of the step-time model (rayloom.planner.hardware.GPU_TABLE / CPU_ROW).
DEVICE_KINDS = ("", "cpu", "h100", "h200", "a100", "l4", "a10g")


@dataclass
class PlanConfig:
    # Memory of one accelerator (GiB); 0 -> detected (the local GPU; on a CPU-only run the device IS
    # host RAM, so the device check is the host check). Declare it to plan a cluster you are not on.
    device_memory_gb: float = 0.0
    # Host RAM of one node (GiB); 0 -> this machine's.
    host_memory_gb: float = 0.0
    # Training workers sharing one node's host RAM; 0 -> all of them on a CPU run, one per GPU
    # (min(num_workers, 8)) on a GPU run.
    workers_per_node: int = 0
    # Fraction of the capacity kept free for what the model does not count (allocator
    # fragmentation, library workspaces): a run fits when peak <= capacity * (1 - headroom).
    headroom: float = 0.1
    # Fixed per-worker cost outside the model (GiB): CUDA context + NCCL on a GPU; the Python, torch,
    # Ray worker and DeepSpeed baseline in host RAM. Negative -> the defaults (1.0 device, 1.5 host).
    device_overhead_gb: float = -1.0
    host_overhead_gb: float = -1.0
    # FLOP/s ceiling of one worker (TFLOP/s, dense, in the training precision); 0 -> train.peak_flops,
    # else measured here with a matmul probe (CPU runs only; GPU runs must declare it when planned
    # from a machine without that GPU).
    peak_tflops: float = 0.0
    # --- the step-time model's hardware (rayloom.planner.hardware; 0 / "" -> the table or a measurement)
    # Table row: cpu | h100 | h200 | a100 | l4 | a10g; "" -> this run's (CPU run: cpu; GPU run: the
    # local GPU's, else h100).
    device_kind: str = ""
    # Fraction of the FLOP/s ceiling the forward/backward reaches (GPU 0.55 assumed, CPU 0.7 measured).
    compute_efficiency: float = 0.0
    # GB/s of one worker's device memory (CPU: measured here with a tensor copy), of host RAM for an
    # offloaded optimizer, of the device<->host link (PCIe), and the bus bandwidth of the collectives
    # between data-parallel workers (sets all-reduce, reduce-scatter and all-gather alike; declare the
    # network's per-GPU share for a multi-node run).
    memory_bandwidth_gbps: float = 0.0
    host_memory_bandwidth_gbps: float = 0.0
    host_link_gbps: float = 0.0
    interconnect_gbps: float = 0.0
    # Planning a model that is not on this machine: a path to its Hugging Face config.json, or a
    # known public shape (KNOWN_SHAPES). Empty -> the model the run trains (model.*).
    model_config: str = ""
    shape: str = ""
    # A rollout engine (e.g. vLLM for on-policy RL) sharing each training device: its KV cache, GiB.
    rollout_kv_cache_gb: float = 0.0
    # --- search: ZeRO stage x offload x micro-batch x accumulation (global batch kept) x checkpointing
    search: bool = False
    # Rows printed from the ranked configurations that fit.
    top_k: int = 10
    # Largest micro-batch tried (powers of two up to it, dividing the global batch).
    max_micro_batch: int = 64
    # Write the best configuration as an experiment YAML under <write_dir>/experiment/<write_name>.yaml
    # (compose it with `hydra.searchpath=[file://<write_dir>] experiment=<write_name>`, or put it in conf/).
    write_best: bool = True
    write_dir: str = "runs/plan"
    # Empty -> plan_<train.run_name>.
    write_name: str = ""
    # Replace an existing file of that name (refused otherwise).
    overwrite: bool = False
    # --- preflight: the training driver refuses a run predicted not to fit, before any worker starts
    preflight: bool = True
    # What the preflight does when it cannot know a capacity (a GPU run planned without a GPU here
    # and no plan.device_memory_gb): "warn" and go on, or "error".
    on_unknown_capacity: str = "warn"
    # Extra knobs of the memory model, kept explicit (docs/planning.md): attention kernel that
    # stores no seq x seq score matrix ("sdpa") or one that does ("eager").
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        for key in ("device_memory_gb", "host_memory_gb", "peak_tflops", "rollout_kv_cache_gb", "memory_bandwidth_gbps",
                    "host_memory_bandwidth_gbps", "host_link_gbps", "interconnect_gbps"):
            non_negative(getattr(self, key), f"plan.{key}")
        non_negative(self.workers_per_node, "plan.workers_per_node")
        fraction(self.headroom, "plan.headroom", inclusive_high=False)
        one_of(self.shape, KNOWN_SHAPES, "plan.shape")
        require(not (self.shape and self.model_config), "plan.shape",
                "set either plan.shape or plan.model_config, not both", self.shape)
        positive(self.top_k, "plan.top_k")
        positive(self.max_micro_batch, "plan.max_micro_batch")
        require("/" not in self.write_name, "plan.write_name", "must be a file name without '/'", self.write_name)
        one_of(self.on_unknown_capacity, ("warn", "error"), "plan.on_unknown_capacity")
        one_of(self.attention, ("sdpa", "eager"), "plan.attention")
        one_of(self.device_kind, DEVICE_KINDS, "plan.device_kind")
        fraction(self.compute_efficiency, "plan.compute_efficiency")
