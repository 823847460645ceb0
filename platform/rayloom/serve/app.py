"""Build the Ray Serve application from the typed config: `build_app(cfg)`.

serve config -> ServePlan (rayloom.serve.deployment_plan: model source, context window, adapters)
-> one `LLMConfig` (Ray Serve LLM's engine + deployment settings) -> by default
(serve.colocate_ingress=true) one deployment whose replicas run rayloom's guarded OpenAI ingress
and a vLLM engine in one process (rayloom.serve.endpoint); with serve.colocate_ingress=false an
LLMServer deployment (rayloom.serve.server) behind a separate ingress deployment. Both are built
with the composition Ray Serve LLM documents for a custom ingress (`build_llm_deployment` +
`make_fastapi_ingress`); `build_openai_app` does the same with the stock ingress and no way to
add middleware.

`app_builder(args)` is the same builder in the form `serve deploy` / a KubeRay RayService calls
(`import_path: rayloom.serve.app:app_builder`, see rayloom.serve.serve_config).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from rayloom.config import RayloomConfig, ServeConfig
from rayloom.errors import UserError
from rayloom.serve.auth import AuthSettings, resolve_auth
from rayloom.serve.cpu_placement import ENGINE_CORE_PLACEMENT_KEY
from rayloom.serve.deployment_plan import ServePlan, plan_serving
from rayloom.serve.release import config_from_args, release_version

log = logging.getLogger(__name__)


def build_engine_kwargs(serve: ServeConfig, plan: ServePlan) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dtype": serve.dtype,
        "max_model_len": plan.max_model_len,
        "tensor_parallel_size": serve.tensor_parallel_size,
        "enable_prefix_caching": serve.enable_prefix_caching,
        "enforce_eager": serve.enforce_eager,
    }
    if serve.max_num_seqs:
        kwargs["max_num_seqs"] = serve.max_num_seqs
    if serve.use_gpu:
        kwargs["gpu_memory_utilization"] = serve.gpu_memory_utilization
        if serve.kv_cache_gib:
            kwargs["kv_cache_memory_bytes"] = serve.kv_cache_gib * 2**30
    if serve.uses_lora:
        kwargs.update(enable_lora=True, max_lora_rank=serve.max_lora_rank, max_loras=serve.max_loras_per_replica)
    kwargs.update(serve.engine_kwargs)
    return kwargs


def build_deployment_config(serve: ServeConfig) -> dict[str, Any]:
    config: dict[str, Any] = {
        # Rollouts (rayloom.serve.release): explicit, not Serve's defaults (20% at a time, no surge,
        # i.e. old replicas stop before their replacements start). Ray 2.60 removed the deployment
        # `version` option: every deploy is a new Serve version and rolls this way, an identical
        # redeploy included; rayloom's own release version labels the model card and the record.
        "max_surge_percent": serve.rollout_max_surge_percent,
        "rolling_update_percentage": serve.rollout_step_percent / 100,
        "graceful_shutdown_timeout_s": serve.drain_timeout_s,
        "max_ongoing_requests": serve.max_ongoing_requests,
        "max_queued_requests": serve.max_queued_requests,
        # Overload answers 503 + Retry-After where Serve detects it: with the colocated endpoint
        # (default) Serve itself, before rayloom's code runs (plain text, from the replica's direct
        # ingress behind HAProxy or from Serve's proxy); with a separate ingress the ingress's
        # call to the engine deployment, which rayloom.serve.ingress turns into an OpenAI-style 503.
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "ray_actor_options": {"num_cpus": serve.replica_num_cpus},
    }
    if serve.min_replicas == serve.max_replicas:
        config["num_replicas"] = serve.min_replicas
    else:
        config["autoscaling_config"] = {
            "min_replicas": serve.min_replicas,
            "max_replicas": serve.max_replicas,
            # Scale-to-zero still starts one replica, so a deploy proves the model loads; it
            # goes away after downscale_delay_s without traffic.
            "initial_replicas": max(1, serve.min_replicas),
            "target_ongoing_requests": serve.target_ongoing_requests,
            "upscale_delay_s": serve.upscale_delay_s,
            "downscale_delay_s": serve.downscale_delay_s,
        }
    return config


def replica_env_vars(serve: ServeConfig) -> dict[str, str]:
    """Serve settings for the replicas' environment (Serve reads them when a replica starts)."""
    env: dict[str, str] = {}
    if serve.throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    if serve.http_ingress == "haproxy":
        # Implies Serve's direct ingress: each ingress replica serves HTTP on its own port, which
        # HAProxy forwards to.
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    elif serve.throughput_optimized:
        # Throughput mode would turn direct ingress on; with the Python proxy as the endpoint the
        # replicas' own HTTP servers would only be ports nothing routes to.
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"
    return env


def controller_env_vars(serve: ServeConfig) -> dict[str, str]:
    """Serve settings for the controller and the HTTP proxies it starts (they inherit its environment).

    Only applied when this deploy starts Serve (Ray ignores them for a controller already running).

    http_ingress=haproxy: the controller runs HAProxy (Ray Serve's HAProxyManager) on serve.port
    instead of the Python proxy, and feeds it the ingress replicas' direct-ingress ports; a
    Python proxy stays on the head node as HAProxy's fallback.

    The Python proxy (http_ingress=proxy, and HAProxy's fallback) reaches the replicas over
    Serve's gRPC channel instead of Ray actor calls. The replicas' full throughput mode is not
    given to the proxy: with it (router on the proxy's event loop) a burst overflowed the queue
    while replicas still had free slots
    (tests/integration/test_serve_endpoint.py::test_overload_gets_fast_503_and_the_endpoint_recovers).
    What each setting gained is measured in bench/bench_serve.py (bench/results/serve.md) and
    summarised in docs/serving.md ("What HAProxy changed, and what is left").
    """
    env: dict[str, str] = {}
    if serve.throughput_optimized:
        env["RAY_SERVE_PROXY_USE_GRPC"] = "1"
    if serve.http_ingress == "haproxy":
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        # Ray's default is an hour; an idle client connection is closed after this.
        env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] = str(serve.client_timeout_s)
    return env


def build_llm_config(serve: ServeConfig, plan: ServePlan):
    # Here, not at the top: Ray Serve LLM imports vLLM and torch; `import rayloom.serve` stays light.
    from pydantic import ValidationError
    from ray.serve.llm import LLMConfig

    if serve.use_gpu:
        placement = {"bundle_per_worker": {"GPU": 1, "CPU": serve.engine_num_cpus}}
        env_vars: dict[str, str] = {}
    else:
        placement = {"bundles": [{"CPU": serve.engine_num_cpus}] * serve.tensor_parallel_size}
        env_vars = {"VLLM_CPU_KVCACHE_SPACE": str(serve.kv_cache_gib)} if serve.kv_cache_gib else {}
    env_vars.update(replica_env_vars(serve))
    lora_config = None
    if serve.uses_lora:
        lora_config = {"dynamic_lora_loading_path": serve.lora_dynamic_path or None,
                       "max_num_adapters_per_replica": serve.max_loras_per_replica}
    try:
        return LLMConfig(
            model_loading_config={"model_id": plan.model_id, "model_source": plan.model_source},
            engine_kwargs=build_engine_kwargs(serve, plan),
            placement_group_config=placement,
            accelerator_type=serve.accelerator_type or None,
            deployment_config=build_deployment_config(serve),
            lora_config=lora_config,
            runtime_env={"env_vars": env_vars} if env_vars else None,
            experimental_configs={"stream_batching_interval_ms": serve.stream_batching_interval_ms,
                                  # read by rayloom.serve.server once the engine runs (CPU only)
                                  ENGINE_CORE_PLACEMENT_KEY: "free" if serve.use_gpu else serve.engine_core_placement},
        )
    except (ValidationError, ValueError) as exc:
        raise UserError(f"invalid serve config for Ray Serve LLM: {_first_line(exc)}") from None


def canary_config(cfg: RayloomConfig, model_id: str) -> RayloomConfig:
    """The candidate's config: serve.canary_model_path served as "<model id>-canary", same settings."""
    from rayloom.serve.canary import canary_id

    serve = dataclasses.replace(cfg.serve, model_path=cfg.serve.canary_model_path, canary_model_path="",
                                model_id=canary_id(model_id))
    return dataclasses.replace(cfg, serve=serve)


def build_app(cfg: RayloomConfig, *, auth: AuthSettings | None = None, plan: ServePlan | None = None,
              canary_plan: ServePlan | None = None):
    """The Serve application for `cfg.serve` (+ `cfg.model`): vLLM replicas behind the OpenAI ingress.

    `auth` defaults to the keys visible to this process (serve.api_key_env / api_key_file). With
    serve.canary_model_path, a second engine deployment serves the candidate (rayloom.serve.canary);
    `canary_plan` defaults to planning it as `plan` was planned.
    """
    # Here, not at the top: Ray Serve LLM imports vLLM and torch; `import rayloom.serve` stays light.
    from ray import serve as ray_serve

    from rayloom.serve._ray_llm_compat import to_model_metadata
    from rayloom.serve.ingress import IngressSettings, RayloomIngress, build_ingress_class
    from rayloom.serve.server import RayloomLLMServer

    serve = cfg.serve
    plan = plan or plan_serving(cfg)
    auth = auth or resolve_auth(serve.require_api_key, serve.api_key_env, serve.api_key_file)
    version = release_version(cfg, plan, auth)
    llm_config = build_llm_config(serve, plan)
    bind_kwargs = {}
    if serve.uses_lora:
        from rayloom.serve.lora_loader import NamedLoraLoader  # here: Ray Serve LLM, as above

        # LLMServer builds its loader as `model_downloader(download_timeout_s=..., max_tries=...)`.
        bind_kwargs["model_downloader"] = functools.partial(
            NamedLoraLoader, adapters=plan.adapters, cache_dir=plan.cache_dir, max_lora_rank=serve.max_lora_rank)
    if serve.canary_model_path and canary_plan is None:
        canary_plan = plan_serving(canary_config(cfg, plan.model_id))
    settings = IngressSettings(
        model_id=plan.model_id, tokenizer_source=plan.tokenizer_source, cache_dir=plan.cache_dir,
        limits=plan.limits, auth=auth, adapter_names=tuple(plan.adapters),
        dynamic_adapters=bool(serve.lora_dynamic_path), dynamic_path=serve.lora_dynamic_path,
        canary_model_id=canary_plan.model_id if serve.canary_model_path else "",
        canary_fraction=serve.canary_fraction, canary_by=serve.canary_by)
    # GET /v1/models/<id> -> metadata.rayloom_lineage: the served model's chain back to its data.
    model_cards = {plan.model_id: to_model_metadata(plan.model_id, llm_config,
                                                    overrides={"rayloom_lineage": plan.lineage,
                                                               "rayloom_version": version})}
    llm_deployments = {}
    if serve.canary_model_path:
        canary_llm = build_llm_config(serve, canary_plan)
        model_cards[canary_plan.model_id] = to_model_metadata(
            canary_plan.model_id, canary_llm, overrides={"rayloom_lineage": canary_plan.lineage,
                                                         "rayloom_version": version, "rayloom_canary_of": plan.model_id})
        llm_deployments[canary_plan.model_id] = _engine_deployment(canary_llm, bind_kwargs, RayloomLLMServer)
    if serve.colocate_ingress:
        return _build_colocated_app(llm_config, model_cards, settings, bind_kwargs)
    llm_deployments[plan.model_id] = _engine_deployment(llm_config, bind_kwargs, RayloomLLMServer)
    options = RayloomIngress.get_deployment_options([llm_config])
    options["ray_actor_options"] = {"num_cpus": serve.ingress_num_cpus}
    if replica_env_vars(serve):
        options["ray_actor_options"]["runtime_env"] = {"env_vars": replica_env_vars(serve)}
    options["name"] = "OpenAiIngress"
    rollout = build_deployment_config(serve)
    options.update({key: rollout[key] for key in ("max_surge_percent", "rolling_update_percentage",
                                                   "graceful_shutdown_timeout_s")})
    return ray_serve.deployment(build_ingress_class(settings), **options).bind(
        llm_deployments=llm_deployments, model_cards=model_cards, settings=settings)


def _engine_deployment(llm_config, bind_kwargs: dict, server_cls):
    # Here, not at the top: Ray Serve LLM imports vLLM and torch; `import rayloom.serve` stays light.
    from ray.serve.llm import build_llm_deployment

    try:
        return build_llm_deployment(llm_config, bind_kwargs=bind_kwargs, deployment_cls=server_cls,
                                    name_prefix="LLMServer:")
    except ValueError as exc:  # e.g. "Unknown engine argument: ..." from serve.engine_kwargs
        raise UserError(f"invalid serve config for Ray Serve LLM: {_first_line(exc)}") from None


def _build_colocated_app(llm_config, model_cards: dict, settings, bind_kwargs: dict):
    """One deployment whose replicas are both ingress and engine (rayloom.serve.endpoint).

    Built by the library's `build_llm_deployment`, so it takes LLMServer's options as they are
    (the engine's placement group plus the replica's bundle, replicas/autoscaling, request
    limits, health checks) and the split layout's engine deployment name.
    """
    # Here, not at the top: Ray Serve LLM imports vLLM and torch; `import rayloom.serve` stays light.
    from ray.serve.llm import build_llm_deployment

    from rayloom.serve.endpoint import RayloomEndpoint
    from rayloom.serve.ingress import build_ingress_class

    try:
        return build_llm_deployment(llm_config, deployment_cls=build_ingress_class(settings, RayloomEndpoint),
                                    name_prefix="LLMServer:",
                                    bind_kwargs={"model_cards": model_cards, "settings": settings, **bind_kwargs})
    except ValueError as exc:  # e.g. "Unknown engine argument: ..." from serve.engine_kwargs
        raise UserError(f"invalid serve config for Ray Serve LLM: {_first_line(exc)}") from None


def app_builder(args: dict[str, Any]):
    """Application builder for Serve config files: `args` = {"serve": {...}, "model": {...}}.

    Runs where `serve deploy` builds the app (on the cluster), so sources are not resolved into
    this node's cache unless the model is a preset; API keys come from the env/file the config
    names, on the ingress node.
    """
    cfg = config_from_args(args)
    auth = AuthSettings(require_api_key=cfg.serve.require_api_key, api_key_env=cfg.serve.api_key_env,
                        api_key_file=cfg.serve.api_key_file)
    plan = plan_serving(cfg, resolve_locally=False)
    canary = (plan_serving(canary_config(cfg, plan.model_id), resolve_locally=False)
              if cfg.serve.canary_model_path else None)
    return build_app(cfg, auth=auth, plan=plan, canary_plan=canary)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[:3]) if text else type(exc).__name__
