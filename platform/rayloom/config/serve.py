"""Serve group: the vLLM engine, replicas, autoscaling, auth and request limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import non_negative, one_of, positive, require


@dataclass
class LoraAdapterConfig:
    name: str = "???"
    # Local directory or s3:// prefix holding a peft adapter.
    path: str = "???"


@dataclass
class ServeConfig:
    app_name: str = "rayloom"
    # Served model id; empty -> model.name.
    model_id: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    use_gpu: bool = False
    # Engine
    dtype: str = "auto"
    max_model_len: int = 1024
    tensor_parallel_size: int = 1
    kv_cache_gib: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    # Replicas and autoscaling
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: int = 8
    max_ongoing_requests: int = 32
    max_queued_requests: int = 64
    # LoRA multiplexing
    lora_adapters: list[LoraAdapterConfig] = field(default_factory=list)
    max_lora_rank: int = 16
    # Security and limits
    api_key_env: str = "RAYLOOM_API_KEY"
    api_key_file: str = ""
    require_api_key: bool = True
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int = 768
    max_tokens_limit: int = 256
    # Deploy mode
    blocking: bool = True
    # Refuse to deploy when the model's last evaluation fails eval.gate.
    enforce_gate: bool = False

    def __post_init__(self) -> None:
        require(1 <= self.port <= 65535, "serve.port", "must be a TCP port", self.port)
        one_of(self.dtype, ("auto", "float32", "bfloat16", "float16"), "serve.dtype")
        positive(self.max_model_len, "serve.max_model_len")
        positive(self.tensor_parallel_size, "serve.tensor_parallel_size")
        positive(self.kv_cache_gib, "serve.kv_cache_gib")
        non_negative(self.min_replicas, "serve.min_replicas")
        require(self.max_replicas >= max(1, self.min_replicas), "serve.max_replicas",
                f"must be >= max(1, serve.min_replicas={self.min_replicas})", self.max_replicas)
        positive(self.target_ongoing_requests, "serve.target_ongoing_requests")
        positive(self.max_ongoing_requests, "serve.max_ongoing_requests")
        non_negative(self.max_queued_requests, "serve.max_queued_requests")
        positive(self.max_body_bytes, "serve.max_body_bytes")
        positive(self.max_prompt_tokens, "serve.max_prompt_tokens")
        positive(self.max_tokens_limit, "serve.max_tokens_limit")
        require(self.max_prompt_tokens < self.max_model_len, "serve.max_prompt_tokens",
                f"must be < serve.max_model_len={self.max_model_len}", self.max_prompt_tokens)
