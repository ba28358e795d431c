"""The search service: question text -> DSL (dense, BM25 or hybrid) -> backend -> typed hits.

The query rewriter (latent-entity filters with adaptive strictness) builds on this: it supplies
the `filter` that goes inside the k-NN clause.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from latentsearch import dsl
from latentsearch.backends import SearchBackend
from latentsearch.models.embedder import Embedder

SearchMode = Literal["dense", "bm25", "hybrid"]
TEXT_FIELDS = ("title^2", "text")


class Hit(BaseModel):
    """One result. With collapsing (the default) each document appears once, as its best chunk."""

    id: str = Field(description="Chunk id: <doc id>#<chunk no>")
    doc_id: str
    chunk: int
    score: float
    title: str | None = None
    text: str
    latent: dict[str, list[str]] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResult(BaseModel):
    """`latentsearch search --json` prints exactly this (stable; new fields may be added)."""

    query: str
    index: str
    mode: SearchMode
    total: int = Field(description="Matching chunks before collapsing")
    took_ms: float
    hits: list[Hit]
    dsl: dict[str, Any] | None = Field(None, description="The request body sent (with --show-dsl)")


def build_body(
    text: str,
    *,
    mode: SearchMode,
    k: int,
    vector: list[float] | None,
    filter: dict[str, Any] | None = None,
    collapse: bool = True,
    ef_search: int | None = None,
) -> dict[str, Any]:
    """The `_search` body for a question. The k-NN candidate pool is widened when collapsing so
    that `k` distinct documents survive."""
    pool = k * 3 if collapse else k
    knn_clause = None
    if mode in ("dense", "hybrid"):
        if vector is None:
            raise ValueError(f"mode {mode} needs the query vector")
        knn_clause = dsl.knn("vector", vector, k=pool, filter=filter, ef_search=ef_search)
    lexical = dsl.multi_match(text, TEXT_FIELDS, type="best_fields")
    if filter and mode != "dense":
        lexical = dsl.bool_query(must=[lexical], filter=[filter])
    if mode == "dense":
        query = knn_clause
        pipeline = None
    elif mode == "bm25":
        query = lexical
        pipeline = None
    else:
        query = dsl.hybrid([lexical, knn_clause])
        pipeline = dsl.normalization_pipeline("min_max", "arithmetic_mean", [0.3, 0.7])
    # OpenSearch 2.19 ignores `collapse` on a hybrid query (no error, duplicate documents); ask for the pool and
    # let collapse_hits() keep each document's best chunk (a no-op where the engine collapsed)
    return dsl.search_body(
        query,
        size=pool if mode == "hybrid" else k,
        collapse_field="doc_id" if collapse else None,
        search_pipeline=pipeline,
    )


def collapse_hits(hits: list[Hit], k: int) -> list[Hit]:
    """The first (best) hit of each document, at most k: the client-side half of `collapse` on `doc_id`."""
    seen: set[str] = set()
    out: list[Hit] = []
    for h in hits:
        if h.doc_id not in seen:
            seen.add(h.doc_id)
            out.append(h)
            if len(out) == k:
                break
    return out


def parse_hits(response: dict[str, Any]) -> list[Hit]:
    hits = []
    for h in response["hits"]["hits"]:
        src = h.get("_source") or {}
        chunk = src.get("chunk") or {}
        hits.append(
            Hit(
                id=h["_id"],
                doc_id=src.get("doc_id", h["_id"].split("#")[0]),
                chunk=int(chunk.get("no", 0)),
                score=float(h.get("_score") or 0.0),
                title=src.get("title"),
                text=src.get("text", ""),
                latent=src.get("latent") or {},
                metadata=src.get("metadata") or {},
            )
        )
    return hits


def search(
    text: str,
    *,
    backend: SearchBackend,
    index: str,
    embedder: Embedder | None,
    k: int = 10,
    mode: SearchMode = "dense",
    filter: dict[str, Any] | None = None,
    collapse: bool = True,
    include_dsl: bool = False,
) -> SearchResult:
    if not text.strip():
        raise ValueError("the query text is empty")
    started = time.perf_counter()
    vector = None
    if mode != "bm25":
        if embedder is None:
            raise ValueError(f"mode {mode} needs an embedder")
        vector = embedder.encode([text])[0].tolist()
    body = build_body(text, mode=mode, k=k, vector=vector, filter=filter, collapse=collapse)
    response = backend.search(index, body)
    return SearchResult(
        query=text,
        index=index,
        mode=mode,
        total=int(response["hits"]["total"]["value"]),
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        hits=collapse_hits(parse_hits(response), k) if collapse else parse_hits(response),
        dsl=body if include_dsl else None,
    )
