"""The OpenAI ingress: Ray Serve LLM's `OpenAiIngress`, with rayloom's admission checks in front.

The protocol (routes, request/response models, streaming, routing to replicas, LoRA
multiplexing) is the library's. This subclass adds only what an exposed endpoint needs and the
library leaves out: request limits checked before a request reaches an engine, with OpenAI-style
4xx errors; adapter names in /v1/models; and GET /health, which runs a real one-token generation.
Auth and the body-size limit sit one layer further out (rayloom.serve.guard), on the FastAPI app
this class is served with (see _build_ingress_app).

Overload: in the default layout (serve.colocate_ingress=true, rayloom.serve.endpoint) the ingress
runs inside the engine replica, and Serve enforces the replica's queue bound before this code
runs: the client gets Serve's own 503 with Retry-After (plain text, not an OpenAI error body).
Only with a separate ingress deployment (serve.colocate_ingress=false) does the ingress's call to
the engine deployment raise BackPressureError, which it answers with an OpenAI-style JSON 503
(`_overloaded`).

No `from __future__ import annotations` here: FastAPI reads the endpoint signatures.
"""

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from ray.serve.exceptions import BackPressureError
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from rayloom.serve import canary
from rayloom.serve._ray_llm_compat import (
    DEFAULT_ENDPOINTS,
    ChatCompletionRequest,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    init_ingress_app,
)
from rayloom.serve.adapter_store import PublishedCache
from rayloom.serve.auth import AuthSettings
from rayloom.serve.guard import RequestGuard
from rayloom.serve.limits import (
    RequestLimits,
    RequestRejected,
    check_prompt_length,
    check_sampling,
    error_body,
    resolve_max_tokens,
)
from rayloom.serve.metrics import RequestMetrics
from rayloom.serve.prompt_tokens import (
    UnsupportedContent,
    chat_size,
    count_chat_tokens,
    count_completion_tokens,
    load_serving_tokenizer,
)

log = logging.getLogger(__name__)

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                   "repetition_penalty", "length_penalty", "n", "logprobs", "top_logprobs", "prompt_logprobs",
                   "min_tokens", "seed", "stop", "logit_bias", "max_tokens", "max_completion_tokens",
                   "bad_words", "allowed_token_ids", "stop_token_ids", "logprob_token_ids")
# Above this many characters (or messages), token counting leaves the event loop for a worker
# thread, so one large request cannot stall the streams the replica is serving.
_COUNT_IN_THREAD_CHARS = 20_000
_COUNT_IN_THREAD_MESSAGES = 32
_HEALTH_TIMEOUT_S = 60.0
# Names of adapters loaded from serve.lora_dynamic_path: one folder under the prefix, no paths.
_DYNAMIC_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class IngressSettings:
    """Everything the ingress replica needs; picklable, no secrets (auth holds digests and names)."""

    model_id: str
    tokenizer_source: str
    cache_dir: str
    limits: RequestLimits
    auth: AuthSettings
    adapter_names: tuple[str, ...] = ()
    # Names under serve.lora_dynamic_path are not known in advance; let them through to the loader
    # when they are published there (rayloom.serve.adapter_store).
    dynamic_adapters: bool = False
    dynamic_path: str = ""
    # A canary (rayloom.serve.canary): "" -> none.
    canary_model_id: str = ""
    canary_fraction: float = 0.0
    canary_by: str = "request"


class RayloomIngress(OpenAiIngress):
    def __init__(self, llm_deployments, model_cards, *, settings: IngressSettings, lora_paths=None, **kwargs):
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths, **kwargs)
        # Fail the deploy now, not on the first request, when no key reached this node.
        settings.auth.verifier().check_ready()
        self._settings = settings
        self._limits = settings.limits
        self._tokenizer = load_serving_tokenizer(settings.tokenizer_source, settings.cache_dir)
        self._published = PublishedCache(settings.dynamic_path) if settings.dynamic_path else None
        self._metrics = RequestMetrics()
        self._canary_count = 0

    # -- OpenAI routes ------------------------------------------------------------------------

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        return await self._serve(body, request, chat=True)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        return await self._serve(body, request, chat=False)

    async def _serve(self, body: Any, request: Request, *, chat: bool) -> Response:
        """Admit, answer through the library, and record the request's metrics (rayloom.serve.metrics)."""
        started = time.perf_counter()
        admitted, prompt_tokens = False, 0
        try:
            prompt_tokens = await self._admit(body, chat=chat)
            admitted = True
            if self._settings.canary_model_id and self._to_canary(body, request):
                body.model = self._settings.canary_model_id
            response = await (super().chat(body, request) if chat else super().completions(body, request))
        except RequestRejected as exc:
            response = _rejection_response(exc)
        except BackPressureError:
            response = _rejection_response(_overloaded())
        return self._metrics.observe(response, model=body.model or self._settings.model_id,
                                     route="chat" if chat else "completions", started=started,
                                     admitted=admitted and response.status_code < 400, prompt_tokens=prompt_tokens)

    def _to_canary(self, body: Any, request: Request) -> bool:
        """Whether a request for the served model goes to the canary (rayloom.serve.canary)."""
        if body.model not in (None, "", self._settings.model_id):
            return False  # an adapter, or a version asked for by name
        if self._settings.canary_by == "api_key":
            key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            return canary.by_key(key, self._settings.canary_fraction)
        self._canary_count += 1
        return canary.by_request(self._canary_count, self._settings.canary_fraction)

    async def model(self, model_id: str):
        base, _, adapter = model_id.partition(":")
        if adapter and base == self._settings.model_id and adapter in self._settings.adapter_names:
            base_card = self._model_cards[base]  # private (rayloom.serve._ray_llm_compat.PRIVATE_SURFACE)
            return ModelCard(id=model_id, object="model", owned_by=base_card.owned_by,
                             permission=list(base_card.permission),
                             metadata={**base_card.metadata, "base_model_id": base, "lora_adapter": adapter})
        return await super().model(model_id)

    async def models(self) -> ModelList:
        listed = await super().models()
        known = {card.id for card in listed.data}
        for name in self._settings.adapter_names:
            model_id = f"{self._settings.model_id}:{name}"
            if model_id not in known:
                listed.data.append(await self.model(model_id))
        return listed

    async def health(self) -> Response:
        """200 only when a replica really generates: one greedy token through the whole path."""
        start = time.perf_counter()
        probe = CompletionRequest(model=self._settings.model_id, prompt="ping", max_tokens=1, temperature=0.0)
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT_S):
                # private (rayloom.serve._ray_llm_compat.PRIVATE_SURFACE)
                result = await anext(self._get_response(body=probe, call_method="completions"))
            if isinstance(result, list):
                result = result[0]
            if isinstance(result, ErrorResponse):
                raise RuntimeError(result.error.message)
            if not isinstance(result, CompletionResponse) or result.usage.completion_tokens < 1:
                raise RuntimeError(f"unexpected probe result {type(result).__name__}")
        except BackPressureError:
            return _rejection_response(_overloaded())
        except Exception as exc:  # any failure means "not healthy"; say what failed
            log.warning("health probe failed: %s", exc)
            return JSONResponse({"status": "unavailable", "model": self._settings.model_id,
                                 "error": {"message": f"generation probe failed: {type(exc).__name__}: {exc}",
                                           "type": "server_error", "param": None, "code": "unhealthy"}},
                                status_code=503)
        return JSONResponse({"status": "ok", "model": self._settings.model_id,
                             "generated_tokens": result.usage.completion_tokens,
                             "latency_ms": round(1000 * (time.perf_counter() - start), 1)})

    # -- admission ----------------------------------------------------------------------------

    async def _admit(self, body: Any, *, chat: bool) -> int:
        """Check a request against this endpoint's limits; fill in a bounded max_tokens. Its prompt tokens."""
        await self._check_model_name(body.model)
        params = {name: getattr(body, name, None) for name in _SAMPLING_FIELDS}
        check_sampling(params, self._limits)
        max_tokens = resolve_max_tokens(params, self._limits)
        if params["max_tokens"] is None and params.get("max_completion_tokens") is None:
            body.max_tokens = max_tokens  # never "until the context is full"
        if chat:
            if not body.messages:
                raise RequestRejected(400, "messages must not be empty", param="messages")
            if len(body.messages) > self._limits.max_messages:
                raise RequestRejected(400, f"at most {self._limits.max_messages} messages per request, got "
                                           f"{len(body.messages)}", param="messages", code="too_many_items")
            request = _ChatPrompt(body.messages, getattr(body, "tools", None), getattr(body, "documents", None))
            size = _COUNT_IN_THREAD_CHARS + 1 if len(body.messages) > _COUNT_IN_THREAD_MESSAGES \
                else chat_size(body.messages) + len(str(request.tools or "")) + len(str(request.documents or ""))
            try:
                counts = [await self._count(size, _count_chat, request)]
            except UnsupportedContent as exc:
                raise RequestRejected(400, str(exc), param="messages", code="unsupported_content") from None
            param = "messages"
        else:
            if getattr(body, "prompt_embeds", None) is not None:
                raise RequestRejected(400, "prompt_embeds are not accepted by this endpoint", param="prompt_embeds")
            if isinstance(body.prompt, list) and len(body.prompt) > self._limits.max_batch_prompts \
                    and not all(isinstance(t, int) for t in body.prompt):
                raise RequestRejected(400, f"at most {self._limits.max_batch_prompts} prompts per request, got "
                                           f"{len(body.prompt)}", param="prompt")
            size = len(str(body.prompt))
            counts = await self._count(size, _count_completion, body.prompt)
            if not counts:
                raise RequestRejected(400, "prompt must not be empty", param="prompt")
            if len(counts) > self._limits.max_batch_prompts:
                raise RequestRejected(400, f"at most {self._limits.max_batch_prompts} prompts per request, got "
                                           f"{len(counts)}", param="prompt")
            param = "prompt"
        check_prompt_length(max(counts), max_tokens, self._limits, prompt_param=param)
        return sum(counts)

    async def _count(self, size: int, counter, value):
        if size > _COUNT_IN_THREAD_CHARS:
            return await asyncio.to_thread(counter, self._tokenizer, value)
        return counter(self._tokenizer, value)

    async def _check_model_name(self, model: str | None) -> None:
        if not model:
            return  # the library defaults to the only served model
        base, _, adapter = model.partition(":")
        known_adapter = adapter in self._settings.adapter_names
        if adapter and not known_adapter and self._settings.dynamic_adapters and _DYNAMIC_ADAPTER_NAME.match(adapter):
            # Published to (and not since removed from) serve.lora_dynamic_path: a storage lookup, off the loop.
            known_adapter = self._published is None or await asyncio.to_thread(self._published.is_published, adapter)
        if base not in self._model_cards or (adapter and not known_adapter):
            served = [self._settings.model_id] + [f"{self._settings.model_id}:{a}" for a in self._settings.adapter_names]
            raise RequestRejected(404, f"model {model!r} does not exist; served: {served}", code="model_not_found")


@dataclass(frozen=True)
class _ChatPrompt:
    messages: Any
    tools: Any = None
    documents: Any = None


def _count_chat(tokenizer, request: _ChatPrompt) -> int:
    return count_chat_tokens(tokenizer, request.messages, tools=request.tools, documents=request.documents)


def _count_completion(tokenizer, prompt) -> list[int]:
    return count_completion_tokens(tokenizer, prompt)


def _overloaded() -> RequestRejected:
    return RequestRejected(503, "the model is at capacity (replicas busy, queue full); retry shortly",
                           type="server_error", code="overloaded", headers={"Retry-After": "1"})


def _rejection_response(exc: RequestRejected) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


# The library's routes that go through rayloom's admission checks, plus /health. Its other routes
# (/tokenize, /detokenize, /v1/embeddings, /v1/score, /v1/audio/transcriptions) are not mounted:
# they would bypass the model-name and prompt-token limits, and a generative endpoint has no use
# for them. Unmounted, they answer 404 like any unknown path (after auth).
SERVED_ROUTES = ("models", "model_data", "chat", "completions")
_ENDPOINTS = {**{name: DEFAULT_ENDPOINTS[name] for name in SERVED_ROUTES}, "health": lambda app: app.get("/health")}


def _build_ingress_app(auth: AuthSettings, max_body_bytes: int) -> FastAPI:
    """The library's FastAPI app (its error handling, CORS, metrics, request ids) with the guard outermost."""
    app = init_ingress_app()
    # FastAPI's default renders HTTP errors (unknown route, the library's 404s) as {"detail": ...};
    # OpenAI clients expect {"error": {...}}.
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(RequestGuard, auth=auth, max_body_bytes=max_body_bytes)
    return app


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_body(str(exc.detail), type=kind, code=code), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def build_ingress_class(settings: IngressSettings, cls: type = RayloomIngress):
    """The Serve ingress class: `cls` (RayloomIngress or a subclass) with its routes bound to a guarded app."""
    return make_fastapi_ingress(cls, endpoint_map=_ENDPOINTS,
                                app=_build_ingress_app(settings.auth, settings.limits.max_body_bytes))
