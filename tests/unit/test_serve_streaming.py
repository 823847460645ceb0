"""The replica's stream batching sends the first chunk without waiting for the batch interval."""

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
