"""`/search`: a question in, hits out, on the configured backend (embedded LanceDB, OpenSearch, ES).

Dense and hybrid questions go through the query rewriter (query/rewriter.py: latent-entity filters
with adaptive strictness, plain k-NN on an index without latent types) unless `rewrite` is false;
BM25 and `rewrite: false` run the plain search service. Model calls made on the way (the question's
embedding, its latent entities) go through the server's micro-batchers, so concurrent searches and
/v1/embeddings calls share batches; backend calls run in a thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

from fastapi import APIRouter, Depends
from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError, _doc
from latentsearch.onnx_export.serve.schemas import SearchRequest, SearchResponse
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services
from latentsearch.query.search import search as plain_search
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS,
                              400: _doc("The backend refused the query (e.g. an unsupported DSL clause)"),
                              404: _doc("The index does not exist"),
                              502: _doc("The backend failed")})


def rewriter_installed() -> bool:
    return importlib.util.find_spec("latentsearch.query.rewriter") is not None


def _plain(services: Services, body: SearchRequest, index: str, embedder: Any) -> SearchResponse:
    with services.backend_call():
        result = plain_search(body.query, backend=services.backend(), index=index, embedder=embedder, k=body.k,
                              mode=body.mode, filter=body.filter, collapse=body.collapse,
                              include_dsl=body.include_dsl)
    return SearchResponse(**result.model_dump())


def _rewritten(services: Services, body: SearchRequest, index: str, loop: asyncio.AbstractEventLoop) -> SearchResponse:
    with services.backend_call():
        rewriter, lock = services.rewriter(index, loop)
        with lock:
            try:
                found = rewriter.search(body.query, k=body.k, mode=body.mode, strictness=body.strictness,
                                        filter=body.filter)
            except ValueError as err:  # option validation (strictness)
                raise ApiError(422, str(err), "invalid_option") from err
    explanation = json.loads(found.explanation.model_dump_json())
    dsl = explanation.pop("dsl", None)
    return SearchResponse(query=found.query, index=found.index, mode=found.mode, took_ms=found.took_ms,  # type: ignore[arg-type]
                          hits=found.hits, dsl=dsl if body.include_dsl else None, rewritten=True,
                          explanation=explanation)


@router.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
             summary="Search the index with a question")
async def search(body: SearchRequest, services: Services = Depends(get_services)) -> SearchResponse:
    """Dense (k-NN), BM25 or hybrid search, one hit per document. Dense and hybrid use the query
    rewriter when installed (set `rewrite: false` for the plain search of `latentsearch search`)."""
    loop = asyncio.get_running_loop()
    index = body.index or services.settings.index
    if body.rewrite and body.mode != "bm25" and rewriter_installed():
        return await run_in_threadpool(_rewritten, services, body, index, loop)
    embedder = None if body.mode == "bm25" else services.blocking_embedder(loop)
    return await run_in_threadpool(_plain, services, body, index, embedder)
