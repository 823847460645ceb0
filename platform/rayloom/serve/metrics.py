"""Per model and adapter request metrics of the OpenAI ingress, exported through Ray's metrics.

Ray Serve's own metrics count requests per application and route, and vLLM's per base model
(`model_name`): neither splits by LoRA adapter. The ingress knows both, so it records, with tags
`model` (the base id) and `adapter` ("" for the base model):

- rayloom_serve_requests (counter, + `route`, `status`): every chat/completions request, rejections included
- rayloom_serve_request_latency_s (histogram): request start to the last byte of the answer
- rayloom_serve_time_to_first_chunk_s (histogram): request start to the first streamed chunk
- rayloom_serve_prompt_tokens / rayloom_serve_generated_tokens (counters): the ingress's prompt
  count and the answer's usage (streams: one per streamed content chunk)

Ray exports them with a `ray_` prefix on each node's metrics port (`ray_rayloom_serve_requests_total`,
`..._bucket`), next to `ray_serve_*` and `ray_vllm_*`; cluster/grafana/rayloom-serving.json charts them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

_LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
# An adapter name not admitted (404, bad request) is not used as a tag value: names are unbounded.
UNKNOWN = "(rejected)"


class RequestMetrics:
    def __init__(self) -> None:
        from ray.util import metrics  # here: Ray's metrics only exist in a Ray worker (the replica)

        tags = ("model", "adapter")
        self.requests = metrics.Counter("rayloom_serve_requests", description="chat/completions requests",
                                        tag_keys=(*tags, "route", "status"))
        self.latency = metrics.Histogram("rayloom_serve_request_latency_s", description="request latency (s)",
                                         boundaries=_LATENCY_BOUNDARIES, tag_keys=tags)
        self.first_chunk = metrics.Histogram("rayloom_serve_time_to_first_chunk_s",
                                             description="time to the first streamed chunk (s)",
                                             boundaries=_LATENCY_BOUNDARIES, tag_keys=tags)
        self.prompt_tokens = metrics.Counter("rayloom_serve_prompt_tokens", description="prompt tokens",
                                             tag_keys=tags)
        self.generated_tokens = metrics.Counter("rayloom_serve_generated_tokens", description="generated tokens",
                                                tag_keys=tags)

    def observe(self, response: Response, *, model: str, route: str, started: float, admitted: bool,
                prompt_tokens: int = 0) -> Response:
        base, _, adapter = (model or "").partition(":")
        tags = {"model": base, "adapter": adapter if admitted or not adapter else UNKNOWN}
        self.requests.inc(tags={**tags, "route": route, "status": str(response.status_code)})
        if prompt_tokens:
            self.prompt_tokens.inc(prompt_tokens, tags=tags)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._observed_stream(response.body_iterator, tags, started)
            return response
        self.latency.observe(time.perf_counter() - started, tags=tags)
        usage = _usage(getattr(response, "body", b""))
        if usage:
            self.generated_tokens.inc(usage, tags=tags)
        return response

    async def _observed_stream(self, chunks: AsyncIterator[Any], tags: dict, started: float) -> AsyncIterator[Any]:
        first = True
        generated = 0
        try:
            async for chunk in chunks:
                if first:
                    self.first_chunk.observe(time.perf_counter() - started, tags=tags)
                    first = False
                text = chunk.decode(errors="ignore") if isinstance(chunk, bytes) else str(chunk)
                generated += text.count('"content":"') + text.count('"text":"')
                yield chunk
        finally:
            self.latency.observe(time.perf_counter() - started, tags=tags)
            if generated:
                self.generated_tokens.inc(generated, tags=tags)


def _usage(body: bytes) -> int:
    try:
        return int(json.loads(body)["usage"]["completion_tokens"])
    except (ValueError, KeyError, TypeError):
        return 0
