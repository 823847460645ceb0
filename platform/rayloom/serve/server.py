"""The engine replica: Ray Serve LLM's `LLMServer`, sending a stream's first chunk at once.

LLMServer batches a stream's chunks every `stream_batching_interval_ms` so that a long answer
crosses the next hop (to the ingress, or with a colocated ingress to the HTTP client) in a
few messages instead of one per token; its batcher also held the first chunk for a whole
interval (see rayloom.serve.streaming). On CPU it also places vLLM's scheduler process once the
engine has started (rayloom.serve.cpu_placement). `resolve_adapter` loads a LoRA adapter by name for the
colocated endpoint (rayloom.serve.endpoint), which has no multiplexed handle call to carry it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray.serve.llm.deployment import LLMServer

from rayloom.serve.cpu_placement import ENGINE_CORE_PLACEMENT_KEY, place_engine_core
from rayloom.serve.streaming import first_then_batched


class RayloomLLMServer(LLMServer):
    async def start(self) -> None:
        await super().start()
        # The engine's processes exist now: place its scheduler process (CPU serving only).
        place_engine_core(self._llm_config.experimental_configs.get(ENGINE_CORE_PLACEMENT_KEY, "free"))

    # Private override (checked by rayloom.serve._ray_llm_compat.PRIVATE_SURFACE).
    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> AsyncGenerator[list[Any], None]:
        return first_then_batched(generator, self._get_batch_interval_ms())

    async def resolve_adapter(self, model_id: str) -> None:
        """Load "<base>:<adapter>" into the engine, as LLMServer does for a multiplexed request.

        `_load_model` is the library's Serve-multiplexed loader (an LRU of
        max_num_adapters_per_replica adapters per replica), so a resident adapter costs nothing.
        """
        # `_load_model` is private (rayloom.serve._ray_llm_compat.PRIVATE_SURFACE).
        disk_lora_model = await self._load_model(model_id)
        await self.engine.resolve_lora(disk_lora_model)
