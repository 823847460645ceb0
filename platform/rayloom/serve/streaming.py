"""Stream batching on the engine replica: the first token at once, the rest batched.

Ray Serve LLM's Batcher yields a stream's chunks every interval, the first one included, which
adds up to one interval to the time to first token. A chat stream also opens with a role-only
chunk (`"delta": {"role": "assistant", "content": ""}`) that carries no token, so sending just
the first chunk at once is not enough: the client's first token is the chunk after it.
`first_then_batched` sends chunks as soon as they exist until one that is not a role-only
opener has gone out, then hands the rest to the library's Batcher unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from rayloom.serve._ray_llm_compat import Batcher


async def first_then_batched(generator: AsyncGenerator[Any, None],
                             interval_ms: float | None) -> AsyncGenerator[list[Any], None]:
    async for chunk in generator:
        yield [chunk]
        if not is_role_only_chunk(chunk):
            break
    else:
        return
    async for batch in Batcher(generator, interval_ms=interval_ms).stream():
        yield batch


def is_role_only_chunk(chunk: Any) -> bool:
    """True for a chat stream's opening SSE chunk that only announces the role (no generated text)."""
    if not isinstance(chunk, str) or not chunk.startswith("data: {"):
        return False
    try:
        choices = json.loads(chunk[len("data: "):]).get("choices") or []
    except ValueError:
        return False
    deltas = [choice.get("delta") or {} for choice in choices]
    return bool(deltas) and all("role" in delta and not delta.get("content") for delta in deltas)
