"""ASGI middleware: API key before the body (401), body size limit (413 before any parsing), body
read timeout (408), undecodable strings (422), and access log + HTTP metrics.

Both are plain ASGI (not BaseHTTPMiddleware) so they see every request, cost little, and the size
limit holds for chunked uploads without a Content-Length too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from latentsearch.onnx_export.serve.metrics import Metrics
from latentsearch.onnx_export.serve.security import key_from_headers, key_problem

log = logging.getLogger("latentsearch.serve.access")
Scope = dict[str, Any]


_ERROR_TYPES = {401: "authentication_error", 408: "request_timeout", 413: "request_too_large",
                422: "invalid_request_error"}
_OPEN_PATHS = frozenset({"/healthz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def _send_error(send: Any, status: int, message: str, code: str,
                      extra_headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = json.dumps({"error": {"message": message, "type": _ERROR_TYPES.get(status, "invalid_request_error"),
                                 "param": None, "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra_headers]})
    await send({"type": "http.response.body", "body": body})


class ApiKeyGate:
    """With an API key set, a request that carries a body is authenticated from its headers before
    a byte of the body is read: an unauthenticated client cannot make the server hold its upload."""

    def __init__(self, app: Any, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (self.api_key is None or scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
                or scope["path"] in _OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        problem = key_problem(key_from_headers(dict(scope.get("headers") or [])), self.api_key)
        if problem:
            await _send_error(send, 401, problem[1], problem[0], [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


def _lone_surrogate(body: bytes) -> bool:
    """True when a JSON body decodes to a string no UTF-8 text holds ("\\ud800" alone); cheap
    unless the body has a surrogate escape at all."""
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        stack = [json.loads(body)]
    except (ValueError, RecursionError):
        return False  # the app answers malformed JSON itself
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


class BodySizeLimit:
    """Refuse bodies above `max_bytes` with 413: by Content-Length when given, else while reading;
    a body that stalls longer than `timeout_s` between chunks gets 408, one with a lone surrogate 422."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float = 10.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.max_bytes} bytes (server --max-body-bytes)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, message, "body_too_large")
            return
        # read the whole (bounded) body now, then replay it to the app
        chunks, size, more = [], 0, True
        while more:
            try:
                msg = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                await _send_error(send, 408, f"request body not received within {self.timeout_s:g} s", "body_timeout")
                return
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, message, "body_too_large")
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body, replayed = b"".join(chunks), False
        if _lone_surrogate(body):
            await _send_error(send, 422, "invalid request: the body holds a lone UTF-16 surrogate escape (e.g. "
                              "\"\\ud800\" without its pair), which is not valid Unicode text", "invalid_unicode")
            return

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect like the server would

        await self.app(scope, replay, send)


class AccessLog:
    """One JSON log line and the HTTP metrics per request; echoes or assigns `x-request-id`."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"  # templates only: bounded labels
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            client = scope.get("client")
            log.info("request", extra={"request_id": request_id, "method": method, "path": scope["path"],
                                       "route": route, "status": status, "duration_ms": round(elapsed * 1000, 2),
                                       "client": f"{client[0]}:{client[1]}" if client else None})
