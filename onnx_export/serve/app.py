"""The FastAPI app factory and the uvicorn runner behind `latentsearch serve`.

Every route lives in one router module beside this file and is listed in `ROUTERS`; embedders of
the app can add their own with `create_app(extra_routers=...)`. A router reaches models and the
backend through `Depends(get_services)` (services.py) and protects itself with
`Depends(require_api_key)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from latentsearch import __version__
from latentsearch.onnx_export.serve import jsonlog, latent_api, openai_api, ops_api, playground, rag_api, search_api
from latentsearch.onnx_export.serve.errors import install_handlers
from latentsearch.onnx_export.serve.metrics import Metrics
from latentsearch.onnx_export.serve.middleware import AccessLog, ApiKeyGate, BodySizeLimit
from latentsearch.onnx_export.serve.services import Services
from latentsearch.onnx_export.serve.settings import ServeConfig

log = logging.getLogger("latentsearch.serve")

ROUTERS: tuple[APIRouter, ...] = (
    openai_api.router,  # /v1/embeddings, /v1/chat/completions, /v1/models
    latent_api.router,  # /extract, /mentions
    search_api.router,  # /search
    ops_api.router,  # /healthz, /metrics
    rag_api.router,  # /rag
    playground.router,  # /search/levels, /ui/indices (the playground's JSON)
    playground.page_router,  # /ui (the strictness playground page; static, no key)
)


def create_app(config: ServeConfig | None = None, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """A ready app: routes, error handlers, size limit, access log, metrics; models per `config`."""
    config = config or ServeConfig()
    metrics = Metrics()
    services = Services(config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        log.info("serving", extra={"index": config.settings.index, "backend": config.settings.backend.resolved_kind,
                                   "max_batch": config.max_batch, "batch_wait_ms": config.batch_wait_ms,
                                   "auth": config.api_key is not None})
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="latentsearch model server",
        version=__version__,
        description=(
            "Embeddings and chat (OpenAI-compatible), latent-entity extraction, mention vectors and search, "
            "with micro-batching of concurrent requests. Errors are `{\"error\": {message, type, code}}`. "
            "When the server has an API key, send it as `Authorization: Bearer KEY` or `x-api-key: KEY`."
        ),
        lifespan=lifespan,
    )
    app.state.services = services
    install_handlers(app)
    for router in (*ROUTERS, *extra_routers):
        app.include_router(router)
    app.openapi = _limits_documented(app, config)  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    # the key is checked from the headers before the body is read (the routes check it again)
    app.add_middleware(ApiKeyGate, api_key=config.api_key.get_secret_value() if config.api_key else None)
    app.add_middleware(AccessLog, metrics=metrics)  # outermost: logs and counts 401s and 413s too
    return app


def _limits_documented(app: FastAPI, config: ServeConfig):
    """Publish this server's configured limits in its OpenAPI spec (maxItems, max_tokens maximum, the
    embedder's dimension), so clients and schema-driven tests know them before hitting 413/422."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        models = schema["components"]["schemas"]

        def limit(model: str, field: str, kind: str, **bounds: int) -> None:
            prop = models.get(model, {}).get("properties", {}).get(field)
            for variant in (prop or {}).get("anyOf", [prop] if prop else []):
                if variant.get("type") == kind:
                    variant.update(bounds)

        limit("EmbeddingRequest", "input", "array", maxItems=config.max_inputs)
        limit("ExtractRequest", "texts", "array", maxItems=config.max_inputs)
        limit("ExtractRequest", "types", "array", maxItems=config.max_types)
        limit("MentionsRequest", "texts", "array", maxItems=config.max_inputs)
        limit("MentionsRequest", "types", "array", maxItems=config.max_inputs)
        limit("ChatCompletionRequest", "max_tokens", "integer", maximum=config.max_tokens_limit)
        limit("ChatCompletionRequest", "max_completion_tokens", "integer", maximum=config.max_tokens_limit)
        dimension = app.state.services.loaded_embedder_dimension()
        if dimension:
            limit("EmbeddingRequest", "dimensions", "integer", minimum=dimension, maximum=dimension)
        return schema

    return openapi


def run(config: ServeConfig) -> None:
    """Serve until interrupted (the `latentsearch serve` command)."""
    import uvicorn

    jsonlog.configure(config.json_logs)
    uvicorn.run(create_app(config), **uvicorn_options(config), log_config=None, access_log=False,
                timeout_graceful_shutdown=10)


def uvicorn_options(config: ServeConfig) -> dict:
    """Connection hardening: idle keep-alive timeout, a cap on concurrent connections (503 above it),
    and a deadline for the request head (a client that connects and sends nothing is dropped)."""
    from latentsearch.onnx_export.serve.protocol import header_timeout_protocol

    return {"host": config.host, "port": config.port, "timeout_keep_alive": config.keep_alive_s,
            "limit_concurrency": config.max_connections, "http": header_timeout_protocol(config.header_timeout_s)}
