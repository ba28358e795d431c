"""Optional API-key auth: `Authorization: Bearer KEY` (what OpenAI clients send) or `x-api-key: KEY`
(what many connectors send). Declared as OpenAPI security schemes so generated clients know."""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from latentsearch.onnx_export.serve.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="The server's --api-key as a bearer token")
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="The server's --api-key")


async def require_api_key(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    header_key: str | None = Depends(api_key_header),
) -> None:
    """Passes when the server has no key, or when either header carries it (constant-time compare)."""
    expected = request.app.state.services.config.api_key
    if expected is None:
        return
    given = header_key or (credentials.credentials if credentials else None)
    problem = key_problem(given, expected.get_secret_value())
    if problem:
        raise ApiError(401, problem[1], problem[0], headers={"WWW-Authenticate": "Bearer"})


async def require_api_key_for_metrics(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    header_key: str | None = Depends(api_key_header),
) -> None:
    """/metrics: the key like every route, unless the server runs with `--metrics-public`."""
    if not request.app.state.services.config.metrics_public:
        await require_api_key(request, credentials, header_key)


def key_problem(given: str | None, expected: str) -> tuple[str, str] | None:
    """(code, message) when `given` is not the key; shared by the route dependency and the
    middleware that answers before the body is read."""
    if given is None:
        return "missing_api_key", "missing API key: send `Authorization: Bearer KEY` or `x-api-key: KEY`"
    if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        return "invalid_api_key", "wrong API key"
    return None


def key_from_headers(headers: dict[bytes, bytes]) -> str | None:
    """The key as `require_api_key` reads it: x-api-key first, else a Bearer token."""
    if headers.get(b"x-api-key"):
        return headers[b"x-api-key"].decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
