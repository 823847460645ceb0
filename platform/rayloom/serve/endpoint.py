"""The colocated endpoint: rayloom's OpenAI ingress and a vLLM engine replica in one deployment.

Ray Serve LLM's default composition is HTTP proxy -> OpenAI ingress replica -> LLMServer
replica -> engine: every request and every batch of streamed chunks crosses two Ray hops, and
the ingress replica is one more process competing with the engine for CPU. Here each replica
runs the same guarded ingress (auth, limits, /health, model cards: rayloom.serve.ingress) and
drives an in-process `LLMServer` (Ray Serve LLM's own server class, built with its documented
`sync_init` + `start`) directly, so the path is HTTP proxy -> replica -> engine, the layout of
`vllm serve` behind Serve's proxy. The deployment keeps LLMServer's own options (placement
group for the engine, replicas/autoscaling, max_ongoing/queued requests), and its health check
is the engine's.

Trade-off against the split layout (serve.colocate_ingress=false): the ingress scales with the
engines instead of on its own, and the proxy cannot see the model name in the body, so requests
for a LoRA adapter go to any replica, which loads the adapter on first use (up to
serve.max_loras_per_replica stay resident), instead of preferring replicas that hold it.

No `from __future__ import annotations` here: FastAPI reads the endpoint signatures.
"""

from typing import Any

from rayloom.serve._ray_llm_compat import RawRequestInfo, get_base_model_id
from rayloom.serve.ingress import IngressSettings, RayloomIngress
from rayloom.serve.server import RayloomLLMServer


class RayloomEndpoint(RayloomIngress):
    # Serve awaits an async constructor; the engine starts before the replica takes traffic.
    async def __init__(self, llm_config, model_cards, *, settings: IngressSettings, model_downloader=None):
        # The library ingress keeps handles per model id; here the only "handle" is the local server.
        super().__init__({llm_config.model_id: None}, model_cards, settings=settings)
        self._server = RayloomLLMServer.sync_init(llm_config, model_downloader=model_downloader)
        await self._server.start()

    @classmethod
    def get_deployment_options(cls, llm_config) -> dict[str, Any]:
        """LLMServer's options: what `build_llm_deployment` asks its deployment class for."""
        return RayloomLLMServer.get_deployment_options(llm_config)

    # Private override (checked by rayloom.serve._ray_llm_compat.PRIVATE_SURFACE).
    async def _get_response(self, *, body: Any, call_method: str, raw_request=None):
        """The library ingress's `_get_response`, calling the in-process server instead of a handle."""
        model_id = await self._get_model_id(body.model)
        if get_base_model_id(model_id) != model_id:
            await self._server.resolve_adapter(model_id)
        raw_request_info = RawRequestInfo.from_starlette_request(raw_request) if raw_request is not None else None
        stream = await getattr(self._server, call_method)(body, raw_request_info)
        async for response in stream:
            yield response

    async def check_health(self) -> None:
        # Serve replaces the replica when this raises: a dead engine means an unhealthy replica.
        await self._server.check_health()

    async def record_routing_stats(self) -> dict[str, Any]:
        return await self._server.record_routing_stats()

    async def __del__(self) -> None:
        # Serve awaits this when it stops the replica: shut the engine down with it.
        server = getattr(self, "_server", None)
        if server is not None:
            await server.__del__()
