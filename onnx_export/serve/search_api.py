"""`/search`: a question in, hits out, on the configured backend (embedded LanceDB, OpenSearch, ES).

The question goes through the index's `Retriever` (query/retrieval.py), the same decision the CLI,
`ask`, `/rag` and LangChain make: the query rewriter (latent-entity filters with adaptive strictness)
for dense and hybrid questions on an index with latent types, plain search otherwise, or when
`rewrite` is false. Model calls made on the way (the question's embedding, its latent entities) go
through the server's micro-batchers, so concurrent searches and /v1/embeddings calls share batches;
backend calls run in a thread.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError, _doc
from latentsearch.onnx_export.serve.guards import resolve_index
from latentsearch.onnx_export.serve.schemas import SearchRequest, SearchResponse
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS,
                              400: _doc("The backend refused the query (e.g. an unsupported DSL clause)"),
                              404: _doc("The index does not exist"),
                              502: _doc("The backend failed")})


def _search(services: Services, body: SearchRequest, index: str, loop: asyncio.AbstractEventLoop) -> SearchResponse:
    with services.backend_call():
        retriever, lock = services.retriever(index, loop)
        with lock:
            try:
                found = retriever.search(body.query, k=body.k, mode=body.mode, strictness=body.strictness,
                                         filter=body.filter, collapse=body.collapse, include_dsl=body.include_dsl,
                                         rewrite=body.rewrite, fusion=body.fusion, weights=body.weights)
            except ValueError as err:  # option validation (strictness, filter shape)
                raise ApiError(422, str(err), "invalid_option") from err
    return SearchResponse(**found.model_dump())


@router.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
             summary="Search the index with a question")
async def search(body: SearchRequest, services: Services = Depends(get_services)) -> SearchResponse:
    """Dense (k-NN), BM25 or hybrid search, one hit per document. Dense and hybrid use the query
    rewriter on an index with latent types (set `rewrite: false` for plain search)."""
    loop = asyncio.get_running_loop()
    return await run_in_threadpool(_search, services, body, resolve_index(services, body.index), loop)
