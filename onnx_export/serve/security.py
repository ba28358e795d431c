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
    if given is None:
        raise ApiError(401, "missing API key: send `Authorization: Bearer KEY` or `x-api-key: KEY`",
                       "missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "wrong API key", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
