"""One retrieval call for the LangChain retriever, `ask` and `/rag`: the query rewriter when it is
installed (latent-entity filters with adaptive strictness), else plain dense/hybrid search.

Kept apart from the LangChain module so that RAG answers need no langchain-core, and so that the
switch from search to rewriter happens in one place.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from latentsearch.query import dsl
from latentsearch.query.search import Hit, build_body, parse_hits
from latentsearch.query.search import search as plain_search
from pydantic import BaseModel, Field

from latentsearch.backends import SearchBackend

SearchType = Literal["dense", "hybrid"]
Strictness = str | int

#: Query types that mark a user filter as OpenSearch DSL (anything else is a metadata shorthand).
_DSL_KEYS = {"bool", "term", "terms", "range", "exists", "ids", "match", "match_all", "match_none", "multi_match",
             "nested", "constant_score", "match_phrase", "prefix", "wildcard"}
#: Top-level chunk fields a shorthand filter may name directly; other names mean `metadata.<name>`.
_TOP_FIELDS = ("doc_id", "title", "text", "chunk.", "latent.", "metadata.", "source.", "mentions.", "links.")


class Retrieval(BaseModel):
    """What one retrieval returned, and how (the rewriter's explanation when it ran)."""

    query: str
    hits: list[Hit]
    explanation: dict[str, Any] | None = Field(None, description="The rewriter's Explanation (model_dump)")
    rewriter: bool = Field(description="Whether the query rewriter (latent filters) produced the hits")
    took_ms: float


def user_filter(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A user filter as one OpenSearch clause. DSL passes through; a shorthand `{"year": 2020,
    "journal": ["a", "b"]}` becomes term/terms filters on `metadata.<field>` (or on a chunk field
    such as `doc_id` or `latent.disease` when named so), all of which must match."""
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"a filter must be a dict (OpenSearch DSL or {{field: value}}), got {type(spec).__name__}")
    if len(spec) == 1 and next(iter(spec)) in _DSL_KEYS:
        return spec
    clauses = []
    for key, value in spec.items():
        field = key if key.startswith(_TOP_FIELDS) or key in _TOP_FIELDS else f"metadata.{key}"
        if isinstance(value, (list, tuple, set)):
            clauses.append(dsl.terms(field, list(value)))
        elif isinstance(value, dict):
            raise ValueError(f"filter value for {key!r} is a dict: write the clause as OpenSearch DSL instead")
        else:
            clauses.append(dsl.term(field, value))
    return clauses[0] if len(clauses) == 1 else dsl.bool_query(filter=clauses)


def rewriter_available() -> bool:
    try:
        import latentsearch.query.rewriter  # noqa: F401
    except ImportError:
        return False
    return True


def make_rewriter(backend: SearchBackend, index: str, embedder: Any, extractor: Any = None) -> Any:
    """The QueryRewriter for an index (extractor None: no latent filtering, plain dense/hybrid search)."""
    from latentsearch.query.rewriter import QueryRewriter

    return QueryRewriter(backend, index, embedder, extractor=extractor)


def _rewrite_options(k: int, search_type: str, strictness: Strictness, min_hits: int | None,
                     clause: dict[str, Any] | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"k": k, "mode": search_type, "strictness": strictness, "filter": clause}
    if min_hits is not None:
        opts["min_hits"] = min_hits
    return opts


def _from_rewritten(text: str, result: Any) -> Retrieval:
    explanation = getattr(result, "explanation", None)
    if explanation is not None and hasattr(explanation, "model_dump"):
        explanation = explanation.model_dump(mode="json")
    return Retrieval(query=text, hits=list(result.hits), explanation=explanation, rewriter=True,
                     took_ms=float(getattr(result, "took_ms", 0.0)))


def retrieve(
    text: str,
    *,
    backend: SearchBackend,
    index: str,
    embedder: Any,
    rewriter: Any | None = None,
    k: int = 10,
    search_type: SearchType = "dense",
    strictness: Strictness = "auto",
    min_hits: int | None = None,
    filter: dict[str, Any] | None = None,
) -> Retrieval:
    """Top-k chunks (one per document) for `text`; `filter` is a user clause or shorthand (see `user_filter`)."""
    clause = user_filter(filter)
    if rewriter is not None:
        result = rewriter.search(text, **_rewrite_options(k, search_type, strictness, min_hits, clause))
        return _from_rewritten(text, result)
    res = plain_search(text, backend=backend, index=index, embedder=embedder, k=k, mode=search_type, filter=clause)
    return Retrieval(query=text, hits=res.hits, explanation=None, rewriter=False, took_ms=res.took_ms)


async def aretrieve(
    text: str,
    *,
    backend: SearchBackend,
    index: str,
    embedder: Any,
    rewriter: Any | None = None,
    async_backend: Any | None = None,
    k: int = 10,
    search_type: SearchType = "dense",
    strictness: Strictness = "auto",
    min_hits: int | None = None,
    filter: dict[str, Any] | None = None,
) -> Retrieval:
    """`retrieve` without blocking the event loop. With an async backend (OpenSearch) and no latent
    filtering, the query is embedded in a worker thread and the request awaited on the async client;
    with latent filtering the rewriter's `asearch` runs; otherwise the sync path runs in a thread
    (embedded engine, Elasticsearch)."""
    clause = user_filter(filter)
    plain = rewriter is None or getattr(rewriter, "extractor", True) is None  # no latent filter: search is enough
    if async_backend is not None and plain:
        if not text.strip():
            raise ValueError("the query text is empty")
        started = time.perf_counter()
        vector = (await asyncio.to_thread(embedder.encode, [text]))[0].tolist()
        body = build_body(text, mode=search_type, k=k, vector=vector, filter=clause)
        response = await async_backend.search(index, body)
        return Retrieval(query=text, hits=parse_hits(response), explanation=None, rewriter=False,
                         took_ms=round((time.perf_counter() - started) * 1000, 2))
    if rewriter is not None and hasattr(rewriter, "asearch"):
        result = await rewriter.asearch(text, **_rewrite_options(k, search_type, strictness, min_hits, clause))
        return _from_rewritten(text, result)
    return await asyncio.to_thread(
        retrieve, text, backend=backend, index=index, embedder=embedder, rewriter=rewriter, k=k,
        search_type=search_type, strictness=strictness, min_hits=min_hits, filter=filter,
    )
