"""One error shape for every failure ({"error": {message, type, param, code}}, as OpenAI clients expect),
and the exception -> status mapping: 401 auth, 404 index, 413 too large, 422 validation,
502 backend, 503 model unavailable, 500 anything else (logged with its traceback)."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # FastAPI's subclasses it; routing 404/405 raise this one

from latentsearch.backends.base import BackendError
from latentsearch.models.registry import ModelNotFoundError
from latentsearch.onnx_export.serve.batching import BatcherClosedError
from latentsearch.onnx_export.serve.schemas import ErrorResponse

log = logging.getLogger("latentsearch.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found", 405: "invalid_request_error",
          413: "request_too_large", 422: "invalid_request_error", 502: "backend_error",
          503: "service_unavailable"}


class FeatureUnavailableError(RuntimeError):
    """A route whose model is not installed or not built yet (answered with 503 and this message)."""


class ApiError(HTTPException):
    """An HTTP error with a machine-readable `code` next to the message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 *, param: str | None = None, type: str | None = None):
        super().__init__(status, message, headers)
        self.code = code
        self.param = param  # the request field at fault, as OpenAI names it
        self.type = type  # overrides the status's default type (OpenAI: model_not_found is invalid_request_error)


def error_json(status: int, message: str, code: str | None = None, details: list[Any] | None = None,
               headers: dict[str, str] | None = None, *, param: str | None = None,
               type: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": type or _TYPES.get(status, "server_error"), "param": param,
                            "code": code}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


AUTH_ERRORS = {401: _doc("Missing or wrong API key (send `Authorization: Bearer KEY` or `x-api-key: KEY`)")}
BODY_ERRORS = {
    400: _doc("The body could not be read (not UTF-8 / not parseable)"),
    413: _doc("Request body or item count above the server's limits"),
    422: _doc("The body does not match the schema; `error.details` lists each problem"),
}
MODEL_ERRORS = {503: _doc("The model behind this route is not installed or not available")}
UNKNOWN_MODEL = {404: _doc("`model` names no model this server serves for the route (code `model_not_found`; "
                           "the message lists the served ones, as does GET /v1/models)")}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        details = jsonable_encoder(err.errors(), custom_encoder={Exception: str})
        first = details[0] if details else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'does not match the schema')}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more problem(s), see error.details)"
        return error_json(422, message, "validation_error", details)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException) -> JSONResponse:
        return error_json(err.status_code, str(err.detail), getattr(err, "code", None), headers=err.headers,
                          param=getattr(err, "param", None), type=getattr(err, "type", None))

    @app.exception_handler(BackendError)
    async def _backend(_: Request, err: BackendError) -> JSONResponse:
        status = err.status if err.status in (400, 404) else 502
        return error_json(status, redact_paths(str(err)), err.error_type)

    @app.exception_handler(FeatureUnavailableError)
    @app.exception_handler(ModelNotFoundError)
    @app.exception_handler(BatcherClosedError)
    async def _unavailable(_: Request, err: Exception) -> JSONResponse:
        return error_json(503, str(err), "unavailable")

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_json(500, f"internal error: {type(err).__name__}: {redact_paths(str(err))}", "internal_error")


_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`/:]+/)+[^\s'\"`/:,)]*")


def redact_paths(message: str) -> str:
    """Error text goes to clients: absolute file paths of the server (its home, database, models)
    are replaced by `<path>`; the log keeps them."""
    return _ABS_PATH.sub("<path>", message)
