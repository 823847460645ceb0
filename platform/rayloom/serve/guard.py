"""ASGI middleware in front of the OpenAI app: API-key auth and the request-body size limit.

Hand-written because it must run before anything else touches the request: before FastAPI
parses a (possibly huge) JSON body, and on every path, including 404s and the docs routes, so no
route is reachable without a key. It is a thin layer; the OpenAI protocol itself stays Ray Serve
LLM's and vLLM's. CORS preflight (OPTIONS) passes through: it carries no key and reaches no model.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rayloom.serve.auth import AuthSettings
from rayloom.serve.limits import RequestRejected

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestGuard:
    def __init__(self, app: Callable, *, auth: AuthSettings, max_body_bytes: int):
        self.app = app
        # Built where the middleware stack is built, i.e. in the ingress replica, so keys from
        # that node's environment / secret file count.
        self.verifier = auth.verifier()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.verifier.allows(headers.get("authorization")):
            await send_error(send, RequestRejected(
                401, "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'.",
                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}))
            return
        if scope.get("method") == "POST":
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if not content_type:
                # Every body of the OpenAI API is JSON: read an unlabelled one as JSON (FastAPI would
                # otherwise validate raw bytes, and the library's error handler fails on them: a 500).
                scope = {**scope, "headers": [*scope.get("headers", []), (b"content-type", b"application/json")]}
            elif content_type != "application/json" and not content_type.endswith("+json"):
                await send_error(send, RequestRejected(415, f"request bodies are JSON (Content-Type: application/json), "
                                                            f"got {content_type!r}", code="unsupported_media_type"))
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_error(send, RequestRejected(400, "invalid Content-Length header", code="invalid_request"))
                return
            if int(declared) > self.max_body_bytes:
                await send_error(send, _too_large(self.max_body_bytes))
                return
        # Read the body here (bounded) so a chunked upload cannot exceed the limit either, then
        # hand it on unchanged.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await send_error(send, _too_large(self.max_body_bytes))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected(413, f"request body exceeds this endpoint's limit of {limit} bytes",
                           code="request_too_large")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # Afterwards the app only waits for the client to disconnect (streaming responses).
        return await receive()

    return replayed


async def send_error(send: Send, error: RequestRejected) -> None:
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
