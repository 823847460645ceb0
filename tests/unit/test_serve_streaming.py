"""The replica's stream batching sends the first token without waiting for the batch interval."""

from __future__ import annotations

import asyncio

from rayloom.serve.streaming import first_then_batched


def test_first_chunk_is_sent_at_once_and_the_rest_is_batched():
    async def scenario():
        got_first = asyncio.Event()

        async def engine():
            yield "t1"
            # The engine only continues once the consumer has the first token. With an hour-long
            # batch interval, a batcher that held the first chunk would never get here.
            await asyncio.wait_for(got_first.wait(), timeout=10)
            for token in ("t2", "t3", "t4"):
                yield token

        batches = []
        async for batch in first_then_batched(engine(), interval_ms=3_600_000):
            batches.append(list(batch))
            got_first.set()
        return batches

    assert asyncio.run(scenario()) == [["t1"], ["t2", "t3", "t4"]]


def test_empty_and_unbatched_streams():
    async def collect(generator, interval_ms):
        return [list(batch) async for batch in first_then_batched(generator, interval_ms)]

    async def nothing():
        return
        yield

    async def three():
        for token in ("a", "b", "c"):
            yield token

    assert asyncio.run(collect(nothing(), 50)) == []
    assert asyncio.run(collect(three(), 0)) == [["a"], ["b"], ["c"]]


def _sse(delta: dict) -> str:
    import json

    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}) + "\n\n"


def test_a_chat_stream_sends_its_role_chunk_and_first_token_at_once():
    role, first, rest = _sse({"role": "assistant", "content": ""}), _sse({"content": "Hi"}), _sse({"content": "!"})

    async def scenario():
        sent = asyncio.Event()

        async def engine():
            yield role
            yield first
            # Reached only once the consumer has the first token (an hour-long interval otherwise).
            await asyncio.wait_for(sent.wait(), timeout=10)
            yield rest

        batches = []
        async for batch in first_then_batched(engine(), interval_ms=3_600_000):
            batches.append(list(batch))
            if first in batch:
                sent.set()
        return batches

    assert asyncio.run(scenario()) == [[role], [first], [rest]]


def test_only_role_only_chat_chunks_count_as_openers():
    from rayloom.serve.streaming import is_role_only_chunk

    assert is_role_only_chunk(_sse({"role": "assistant", "content": ""}))
    assert not is_role_only_chunk(_sse({"role": "assistant", "content": "Hi"}))
    assert not is_role_only_chunk(_sse({"content": "Hi"}))
    assert not is_role_only_chunk('data: {"choices": [{"index": 0, "text": "Hi"}]}\n\n')  # completions
    assert not is_role_only_chunk("data: [DONE]\n\n")
    assert not is_role_only_chunk("data: {not json\n\n")
    assert not is_role_only_chunk({"role": "assistant"})
