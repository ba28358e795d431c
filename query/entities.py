"""Type queries over per-mention vectors: "dinosaur", "airline", "vaccine" -> documents mentioning one.

The type description is embedded exactly like a mention (one-span text through the LLM's mid-layer
V projection and the trained head), then matched by nested k-NN over `mentions.vector` with
`score_mode: max`, so a document is scored by its best mention and returned once; the matching
mentions come back as inner hits. `mention_type_clause` is the piece the query rewriter embeds in
a larger `bool`/`hybrid` query.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from latentsearch import dsl
from latentsearch.backends import SearchBackend
from latentsearch.models.mention_head import ARTIFACT, MentionVectorizer, get_vectorizer

MENTIONS_PATH = "mentions"
MENTION_FIELD = "mentions.vector"


def type_vector(type_description: str, vectorizer: MentionVectorizer | None = None) -> list[float]:
    vectorizer = vectorizer or get_vectorizer()
    return vectorizer.embed_types([type_description])[0].tolist()


def mention_type_clause(type_description: str, k: int = 50, *, vector: list[float] | None = None,
                        filter: dict[str, Any] | None = None, inner_hits: int | None = 3,
                        vectorizer: MentionVectorizer | None = None) -> dict[str, Any]:
    """The nested k-NN clause matching documents that mention an entity of this type (k counts
    documents). `filter` (parent-level, e.g. latent-entity terms) goes inside the knn."""
    if not type_description.strip():
        raise ValueError("the type description is empty: say what kind of entity to find, e.g. 'airline'")
    vec = vector if vector is not None else type_vector(type_description, vectorizer)
    knn = dsl.knn(MENTION_FIELD, vec, k=k, filter=filter)
    if inner_hits:
        knn["knn"][MENTION_FIELD]["expand_nested_docs"] = True  # score every mention of the chosen docs
    hits = {"size": inner_hits, "_source": {"excludes": ["mentions.vector"]}} if inner_hits else None
    return dsl.nested(MENTIONS_PATH, knn, score_mode="max", inner_hits=hits)


class MatchedMention(BaseModel):
    text: str
    start: int | None = None
    end: int | None = None
    score: float


class EntityHit(BaseModel):
    id: str = Field(description="Chunk id: <doc id>#<chunk no>")
    doc_id: str
    score: float = Field(description="Cosine-based score of the best mention (OpenSearch cosinesimil: (1+cos)/2)")
    text: str
    title: str | None = None
    mentions: list[MatchedMention]


class EntityResult(BaseModel):
    """`latentsearch entities --json` prints exactly this."""

    type: str
    index: str
    k: int
    took_ms: float
    hits: list[EntityHit]


def search_entities(type_description: str, *, backend: SearchBackend, index: str, k: int = 50,
                    inner_hits: int = 3, head_path: Path = ARTIFACT, use_head: bool = True,
                    vector: list[float] | None = None) -> EntityResult:
    """Documents (best chunk, each document once) that mention an entity of the described type."""
    vectorizer = get_vectorizer(head_path, use_head=use_head) if vector is None else None  # load outside the clock
    started = time.perf_counter()
    if vector is None:
        vector = type_vector(type_description, vectorizer)
    clause = mention_type_clause(type_description, k=k * 3, vector=vector, inner_hits=inner_hits)
    body = dsl.search_body(clause, size=k, collapse_field="doc_id")
    response = backend.search(index, body)
    hits = []
    for h in response["hits"]["hits"]:
        src = h.get("_source") or {}
        inner = ((h.get("inner_hits") or {}).get(MENTIONS_PATH) or {}).get("hits", {}).get("hits", [])
        hits.append(EntityHit(
            id=h["_id"], doc_id=src.get("doc_id", h["_id"].split("#")[0]), score=float(h.get("_score") or 0.0),
            text=src.get("text", ""), title=src.get("title"),
            mentions=[MatchedMention(text=m["_source"].get("text", ""), start=m["_source"].get("start"),
                                     end=m["_source"].get("end"), score=float(m.get("_score") or 0.0)) for m in inner],
        ))
    return EntityResult(type=type_description, index=index, k=k, took_ms=round((time.perf_counter() - started) * 1e3, 2),
                        hits=hits)
