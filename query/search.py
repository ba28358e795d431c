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
from latentsearch.mappings import LEXICAL_FIELD
from latentsearch.models.embedder import Embedder

SearchMode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["rrf", "min_max"]

# The lexical query: BM25 on `content`, the mapping's title + text field (copy_to), english-analysed.
# On SciFact train claims this beats multi_match best_fields over title^2 and text by 13 points of
# nDCG@10 (benchmarks/lexical_ablation.py; README "Lexical search").
TEXT_FIELDS = (LEXICAL_FIELD,)

# Hybrid fusion defaults, fitted on SciFact train claims (benchmarks/fusion_fit.py) and used by every
# entry point (plain search, the rewriter, the CLI, the server): the one place they are set.
DEFAULT_FUSION: Fusion = "rrf"
DEFAULT_WEIGHTS: tuple[float, float] = (0.5, 0.5)  # (BM25, k-NN), min_max only
RRF_RANK_CONSTANT = 20


def lexical_query(text: str) -> dict[str, Any]:
    """The BM25 clause every lexical and hybrid body uses."""
    return dsl.match(LEXICAL_FIELD, text)


def hybrid_pipeline(fusion: Fusion | None = None, weights: tuple[float, float] | list[float] | None = None
                    ) -> dict[str, Any]:
    """The search pipeline that fuses the BM25 and k-NN sub-queries of `hybrid` (defaults above).

    `rrf` is OpenSearch's score-ranker-processor (unweighted: its spec has no weights); `min_max`
    normalises each list to [0, 1] and takes the weighted mean (weights: BM25, k-NN). Weights without a
    fusion mean min_max."""
    fusion = fusion or ("min_max" if weights is not None else DEFAULT_FUSION)
    if fusion == "rrf":
        if weights is not None:
            raise ValueError("rrf fusion takes no weights (OpenSearch's score-ranker-processor has none); "
                             "use fusion min_max for weighted fusion")
        return dsl.rrf_pipeline(RRF_RANK_CONSTANT)
    if fusion != "min_max":
        raise ValueError(f"fusion must be rrf or min_max, got {fusion!r}")
    w = list(weights) if weights is not None else list(DEFAULT_WEIGHTS)
    if len(w) != 2 or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"min_max weights are two non-negative numbers (BM25, k-NN), got {w}")
    return dsl.normalization_pipeline("min_max", "arithmetic_mean", w)


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
    fusion: Fusion | None = None,
    weights: tuple[float, float] | list[float] | None = None,
) -> dict[str, Any]:
    """The `_search` body for a question. The k-NN candidate pool is widened when collapsing so
    that `k` distinct documents survive. `fusion`/`weights`: hybrid only (default: `hybrid_pipeline`)."""
    pool = k * 3 if collapse else k
    knn_clause = None
    if mode in ("dense", "hybrid"):
        if vector is None:
            raise ValueError(f"mode {mode} needs the query vector")
        knn_clause = dsl.knn("vector", vector, k=pool, filter=filter, ef_search=ef_search)
    lexical = lexical_query(text)
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
        pipeline = hybrid_pipeline(fusion, weights)
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
    fusion: Fusion | None = None,
    weights: tuple[float, float] | list[float] | None = None,
) -> SearchResult:
    if not text.strip():
        raise ValueError("the query text is empty")
    started = time.perf_counter()
    vector = None
    if mode != "bm25":
        if embedder is None:
            raise ValueError(f"mode {mode} needs an embedder")
        vector = embedder.encode([text])[0].tolist()
    body = build_body(text, mode=mode, k=k, vector=vector, filter=filter, collapse=collapse, fusion=fusion,
                      weights=weights)
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
