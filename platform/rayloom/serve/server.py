"""The engine replica: Ray Serve LLM's `LLMServer`, sending a stream's first chunk at once.

LLMServer batches a stream's chunks every `stream_batching_interval_ms` so that a long answer
crosses the replica -> ingress hop in a few messages instead of one per token; its batcher also
held the first chunk for a whole interval (see rayloom.serve.streaming). Nothing else changes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray.serve.llm.deployment import LLMServer

from rayloom.serve.streaming import first_then_batched


class RayloomLLMServer(LLMServer):
    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> AsyncGenerator[list[Any], None]:
        return first_then_batched(generator, self._get_batch_interval_ms())
