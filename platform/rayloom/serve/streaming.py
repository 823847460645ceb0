"""Stream batching for the replica -> ingress hop: the first chunk at once, the rest batched.

Ray Serve LLM's Batcher yields a stream's chunks every interval, the first one included, which
adds up to one interval to the time to first token. `first_then_batched` sends the first chunk
as soon as it exists and hands the rest to the library's Batcher unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.utils.batcher import Batcher


async def first_then_batched(generator: AsyncGenerator[Any, None],
                             interval_ms: float | None) -> AsyncGenerator[list[Any], None]:
    async for first in generator:
        yield [first]
        break
    else:
        return
    async for batch in Batcher(generator, interval_ms=interval_ms).stream():
        yield batch
