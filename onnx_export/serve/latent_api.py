"""Latent-entity routes: `/extract` (LentEx values per type) and `/mentions` (spans + vectors).

Both are what an OpenSearch ingest pipeline's `ml_inference` processor calls through an ML Commons
connector; both take a list of texts so one call covers a bulk batch of chunks.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from latentsearch.onnx_export.serve import inference
from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError
from latentsearch.onnx_export.serve.guards import check_prompt
from latentsearch.onnx_export.serve.schemas import (
    ExtractRequest,
    ExtractResponse,
    ExtractResult,
    Mention,
    MentionsRequest,
    MentionsResponse,
    MentionsResult,
)
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services

router = APIRouter(tags=["latent entities"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS})


def _check_texts(texts: list[str], limit: int) -> None:
    if len(texts) > limit:
        raise ApiError(413, f"{len(texts)} texts in one request; this server takes at most {limit} (--max-inputs)",
                       "too_many_inputs")


@router.post("/extract", response_model=ExtractResponse, summary="Latent entities per text and type (LentEx)")
async def extract(body: ExtractRequest, services: Services = Depends(get_services)) -> ExtractResponse:
    """For every text and every requested type, the entities the text implies (lowercased, at most 3).
    A type with `options` gets exactly one of them (the likeliest), never free text."""
    started = time.perf_counter()
    _check_texts(body.texts, services.config.max_inputs)
    check_prompt(services, body.texts, "the texts")
    if len(body.types) > services.config.max_types:
        raise ApiError(413, f"{len(body.types)} types in one request; at most {services.config.max_types}",
                       "too_many_types")
    names = [t.name for t in body.types]
    if len(set(names)) != len(names):
        raise ApiError(422, f"type names must be unique, got {names}", "duplicate_type")
    items = [inference.ExtractItem(text, body.text_type, t.prompt_name, tuple(t.options) if t.options else None)
             for text in body.texts for t in body.types]
    values = await services.extract.submit(items)
    per_text = len(body.types)
    results = [ExtractResult(index=i, latent={t.name: values[i * per_text + j] for j, t in enumerate(body.types)})
               for i in range(len(body.texts))]
    return ExtractResponse(model=services.extractor_name, results=results,
                           took_ms=round((time.perf_counter() - started) * 1000, 2))


@router.post("/mentions", response_model=MentionsResponse, summary="Entity mentions with type-aware vectors")
async def mentions(body: MentionsRequest, services: Services = Depends(get_services)) -> MentionsResponse:
    """Type-agnostic entity spans per text, each with its NER-Retriever vector (mid-layer value
    projection at the span's last token, through the trained head). 503 until that model is installed."""
    started = time.perf_counter()
    _check_texts(body.texts, services.config.max_inputs)
    if body.types and len(body.types) > services.config.max_inputs:
        raise ApiError(413, f"{len(body.types)} types in one request; at most {services.config.max_inputs}",
                       "too_many_types")
    model = await services.mentions.run_in_worker(services.mention_model)
    found = await services.mentions.submit(body.texts)
    type_vectors = await services.mentions.run_in_worker(lambda: model.embed_types(body.types)) if body.types else None
    results = [MentionsResult(index=i, mentions=[Mention(**m) for m in spans]) for i, spans in enumerate(found)]
    return MentionsResponse(model=model.name, dimension=model.dimension, results=results, type_vectors=type_vectors,
                            took_ms=round((time.perf_counter() - started) * 1000, 2))
