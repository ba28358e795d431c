"""`POST /rag` on the model server: a question in, an `Answer` (text, citations, supported flag,
retrieved doc ids, passages, the rewriter's explanation) out.

Retrieval goes through the index's `Retriever` (the search-or-rewriter decision /search makes too)
and the answer through the server's batched chat LLM, so /rag, /search and /v1/chat/completions
share models and batches.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError, _doc
from latentsearch.onnx_export.serve.guards import IndexName, check_prompt, generation_budget, resolve_index
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services
from latentsearch.query.rag import Answer, answer_from_passages, passages_from_hits
from latentsearch.query.search import Fusion

router = APIRouter(tags=["rag"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS,
                              404: _doc("The index does not exist"), 502: _doc("The backend failed")})


class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="The question, in natural language")
    index: IndexName | None = Field(None, description="Default: the server's configured index")
    k: int | None = Field(None, ge=1, le=50, description="Context passages (default rag.k)")
    mode: Literal["dense", "hybrid"] = "dense"
    strictness: str | int = Field("auto", description="auto, strict, loose, none, an int or a percent")
    filter: dict[str, Any] | None = Field(None, description="OpenSearch DSL clause or {metadata field: value(s)}")
    max_tokens: int | None = Field(None, ge=1, description="Answer length cap (default rag.max_new_tokens)")
    rewrite: bool = Field(True, description="false: plain k-NN without latent filters")
    fusion: Fusion | None = Field(None, description="hybrid: rrf or min_max (default: the fitted one)")
    weights: tuple[float, float] | None = Field(None, description="hybrid min_max: (BM25, k-NN) weights")


class _ServerLLM:
    """The server's batched chat LLM as the RAG pipeline's `ChatLLM` (called from a worker thread)."""

    def __init__(self, services: Services, loop: asyncio.AbstractEventLoop):
        self.services, self.loop = services, loop
        self.name = services.llm_name

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        future = asyncio.run_coroutine_threadsafe(self.services.generate(messages, max_tokens=max_tokens), self.loop)
        return future.result()[0].text


def _answer(services: Services, body: RagRequest, loop: asyncio.AbstractEventLoop) -> Answer:
    settings = services.settings
    index = resolve_index(services, body.index)
    budget = generation_budget(services, body.max_tokens, settings.rag.max_new_tokens)
    config = settings.rag.model_copy(update={"max_new_tokens": budget})
    embedder = services.blocking_embedder(loop)
    with services.backend_call():
        backend = services.backend()
        if not backend.index_exists(index):
            raise ApiError(404, f"index `{index}` does not exist", "index_not_found")
        retriever, lock = services.retriever(index, loop)
        try:
            with lock:
                result = retriever.search(body.question, k=body.k or config.k, mode=body.mode,
                                          strictness=body.strictness, filter=body.filter, rewrite=body.rewrite,
                                          fusion=body.fusion, weights=body.weights)
        except ValueError as err:
            raise ApiError(422, str(err), "invalid_option") from err
    return answer_from_passages(body.question, passages_from_hits(result.hits), _ServerLLM(services, loop),
                                config=config, embedder=embedder, explanation=result.explanation,
                                rewriter=result.rewritten)


@router.post("/rag", response_model=Answer, summary="Answer a question from the index, with citations")
async def rag(body: RagRequest, services: Services = Depends(get_services)) -> Answer:
    """Retrieve (query rewriter), prompt the chat LLM with numbered passages tagged by doc id, keep the
    citations that point at retrieved passages; `supported: false` with a NOT IN CONTEXT text when the
    passages do not hold the answer."""
    resolve_index(services, body.index)  # the checks that need no model or backend answer at once
    generation_budget(services, body.max_tokens, services.settings.rag.max_new_tokens)
    check_prompt(services, [body.question], "the question")
    return await run_in_threadpool(_answer, services, body, asyncio.get_running_loop())
