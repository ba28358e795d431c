"""The one place that decides how a question is searched: plain dense/BM25/hybrid search, or the
query rewriter (latent-entity filters with adaptive strictness). The CLI's `search` and `ask`,
the server's `/search` and `/rag`, the LangChain retriever and the evaluations all call
`Retriever`, so the same question with the same settings gives the same hits everywhere.

    retriever = Retriever.from_settings(settings, index="papers")
    found = retriever.search("Which drugs lower the risk of heart attack?", k=5)
    found.hits, found.rewritten, found.explanation

The rule (`Retriever.uses_rewriter`): the rewriter runs for dense and hybrid questions, with one hit
per document, on an index whose schema lists latent types, when an extractor is available and the
caller asked for latent filtering (`rewrite`, strictness other than `none`). Everything else is
plain search. Kept apart from the LangChain module so RAG answers need no langchain-core.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from latentsearch import dsl
from latentsearch.backends import SearchBackend
from latentsearch.cache import ContentCache
from latentsearch.config import EntitySchema, Settings
from latentsearch.mappings import LEXICAL_FIELD, schema_from_mapping
from latentsearch.protocols import Embedder, LatentExtractor
from latentsearch.query.rewriter import QueryRewriter, RewriteOptions, RewrittenSearch
from latentsearch.query.search import (
    Fusion,
    Hit,
    SearchMode,
    SearchResult,
    build_body,
    collapse_hits,
    hybrid_pipeline,
    parse_hits,
)
from latentsearch.query.search import search as plain_search

SearchType = Literal["dense", "hybrid"]
Strictness = str | int

#: Query types that mark a user filter as OpenSearch DSL (anything else is a metadata shorthand).
_DSL_KEYS = {"bool", "term", "terms", "range", "exists", "ids", "match", "match_all", "match_none", "multi_match",
             "nested", "constant_score", "match_phrase", "prefix", "wildcard"}
#: Top-level chunk fields a shorthand filter may name directly; other names mean `metadata.<name>`.
_TOP_FIELDS = ("doc_id", "title", "text", "chunk.", "latent.", "metadata.", "source.", "mentions.", "links.")


class Retrieval(BaseModel):
    """What one search returned, and how. `latentsearch search --json` and `/search` print exactly this."""

    query: str
    index: str
    mode: SearchMode
    total: int | None = Field(None, description="Matching chunks before collapsing (at the chosen level)")
    took_ms: float
    hits: list[Hit]
    dsl: dict[str, Any] | None = Field(None, description="The request body sent (include_dsl)")
    rewritten: bool = Field(False, description="Whether the query rewriter (latent filters) built the query")
    explanation: dict[str, Any] | None = Field(None, description="The rewriter's account: entities, levels, "
                                                                 "chosen minimum_should_match and why")

    @classmethod
    def from_plain(cls, result: SearchResult) -> Retrieval:
        return cls(**result.model_dump(), rewritten=False)

    @classmethod
    def from_rewritten(cls, found: RewrittenSearch) -> Retrieval:
        explanation = found.explanation.model_dump(mode="json")
        explanation.pop("dsl", None)  # the body is `dsl` (with include_dsl), not part of the account
        return cls(query=found.query, index=found.index, mode=found.mode, total=found.total,  # type: ignore[arg-type]
                   took_ms=found.took_ms, hits=found.hits, dsl=found.dsl, rewritten=True, explanation=explanation)


#: Range operators the shorthand accepts (`{"year": {"gte": 2020}}`), mirroring the DSL's `range`.
RANGE_OPERATORS = ("gt", "gte", "lt", "lte", "format", "time_zone")


def mapped_fields(mappings: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every mapped field path → its mapping (`{"type": "text", "fields": {"keyword": ...}}`), so the
    shorthand can pick a text field's keyword sub-field: a `term` on analyzed text never matches a title."""
    found: dict[str, dict[str, Any]] = {}

    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, prop in (props or {}).items():
            path = f"{prefix}{name}"
            if "properties" in prop:
                walk(prop["properties"], path + ".")
            if "type" in prop and prop["type"] != "object":
                found[path] = prop

    walk((mappings or {}).get("properties", {}), "")
    return found


def _exact_field(field: str, value: Any, fields: dict[str, dict[str, Any]] | None) -> str:
    """The field an exact match on `value` must name: a text field's `keyword` sub-field for strings."""
    if not isinstance(value, str):
        return field
    prop = (fields or {}).get(field)
    if prop is None:  # not mapped (yet): dynamic mapping gives `metadata` strings text + `.keyword`
        return f"{field}.keyword" if field.startswith("metadata.") and not field.endswith(".keyword") else field
    if prop.get("type") == "text":
        subs = prop.get("fields") or {}
        keyword = next((n for n, sub in subs.items() if sub.get("type") == "keyword"), None)
        if keyword is None:
            raise ValueError(f"filter field {field!r} is analyzed text without a keyword sub-field: an exact "
                             f"value cannot match it; write a `match` clause as OpenSearch DSL instead")
        return f"{field}.{keyword}"
    return field


def user_filter(spec: dict[str, Any] | None, fields: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, Any] | None:
    """A user filter as one OpenSearch clause; the one filter syntax of the CLI (`--filter`), /search,
    /rag, `ask` and LangChain. DSL passes through. A shorthand `{"journal": "The Lancet", "year": {"gte": 2020},
    "doc_id": ["a", "b"]}` becomes term/terms/range filters, all of which must match: names without a
    chunk-field prefix mean `metadata.<name>`; strings on text fields go to their keyword sub-field
    (`fields` is the index mapping from `mapped_fields`; without it `metadata.*` strings use `.keyword`, the
    dynamic-mapping default); a list means any of its values; a dict takes range operators."""
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
            values = list(value)  # an empty list matches nothing, as `terms: []` does in OpenSearch
            clauses.append(dsl.terms(_exact_field(field, values[0] if values else "", fields), values))
        elif isinstance(value, dict):
            unknown = sorted(set(value) - set(RANGE_OPERATORS))
            if unknown or not value:
                raise ValueError(f"filter value for {key!r} takes range operators {list(RANGE_OPERATORS)}, got "
                                 f"{unknown or 'none'}; write other clauses as OpenSearch DSL")
            clauses.append({"range": {field: dict(value)}})
        elif value is None:
            raise ValueError(f"filter value for {key!r} is null; use {{\"exists\": {{\"field\": ...}}}} in DSL")
        else:
            clauses.append(dsl.term(_exact_field(field, value, fields), value))
    return clauses[0] if len(clauses) == 1 else dsl.bool_query(filter=clauses)


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """`--filter` text: JSON (`'{"journal": "The Lancet"}'`, or DSL) or `field=value` pairs joined by commas."""
    import json

    if not text or not text.strip():
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--filter is not valid JSON: {err}") from err
        if not isinstance(found, dict):
            raise ValueError("--filter JSON must be an object")
        return found
    spec: dict[str, Any] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--filter takes JSON or field=value pairs, got {part!r}")
        spec[name.strip()] = value.strip()
    return spec


def question_store(settings: Settings) -> ContentCache | None:
    """The content cache ingest uses, so a question's extracted entities are computed once per machine."""
    return ContentCache(settings.cache_dir / "processors.sqlite") if settings.ingest.cache else None


class Retriever:
    """Searches one index, choosing plain search or the rewriter by one rule (see the module doc).

    `extractor` is a loaded extractor, or None with `load_extractor` a callable that loads it the first
    time the index holds latent values (so an index without them never loads the LLM). Without
    either, questions are never rewritten."""

    def __init__(self, backend: SearchBackend, index: str, embedder: Embedder, *,
                 extractor: LatentExtractor | None = None,
                 load_extractor: Callable[[], LatentExtractor] | None = None, store: ContentCache | None = None,
                 async_backend: Any = None):
        self.backend, self.index, self.embedder = backend, index, embedder
        self.async_backend = async_backend
        self._extractor, self._load_extractor, self._store = extractor, load_extractor, store
        self._schema: EntitySchema | None = None
        self._fields: dict[str, dict[str, Any]] | None = None
        self._rewriter: QueryRewriter | None = None
        self._lexical_ok = False

    @classmethod
    def from_settings(cls, settings: Settings, *, index: str | None = None, backend: SearchBackend | None = None,
                      embedder: Any = None, extractor: Any = None, latent: bool = True,
                      async_backend: Any = None) -> Retriever:
        """The retriever every entry point builds: configured backend and models, the persistent question
        cache, and (with `latent`) the LentEx extractor, loaded only when the index holds latent values."""
        from latentsearch.backends import open_backend
        from latentsearch.models.factory import embedder_from_settings, extractor_from_settings

        backend = backend or open_backend(settings.backend)
        embedder = embedder if embedder is not None else embedder_from_settings(settings.models)
        loader = (lambda: extractor_from_settings(settings.models, questions=True)) if latent and extractor is None else None
        return cls(backend, index or settings.index, embedder, extractor=extractor if latent else None,
                   load_extractor=loader, store=question_store(settings), async_backend=async_backend)

    # -- the decision -----------------------------------------------------------------------
    @property
    def schema(self) -> EntitySchema:
        if self._schema is None:
            found = (schema_from_mapping(self.backend.get_mapping(self.index))
                     if self.backend.index_exists(self.index) else None)
            self._schema = found or EntitySchema()
        return self._schema

    def filter_clause(self, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        """The user's filter (DSL or shorthand) against this index's mapping (`user_filter`)."""
        if not spec:
            return None
        if self._fields is None:
            exists = self.backend.index_exists(self.index)
            self._fields = mapped_fields(self.backend.get_mapping(self.index)) if exists else {}
        return user_filter(spec, self._fields)

    def check_lexical(self, mode: str) -> None:
        """BM25 and hybrid query `content` (mapping version 2, issue 15). On an index created before it,
        OpenSearch would silently match nothing: say so instead."""
        if mode == "dense" or self._lexical_ok:
            return
        mapping = self.backend.get_mapping(self.index) if self.backend.index_exists(self.index) else None
        props = (mapping or {}).get("properties") or {}
        if mapping is not None and LEXICAL_FIELD not in props and "text" in props:
            raise ValueError(
                f"index `{self.index}` was created before lexical search moved to the `{LEXICAL_FIELD}` field "
                "(title + text, english analysis): delete it and ingest again (embeddings come from the cache), "
                "or search it with mode dense"
            )
        self._lexical_ok = True

    def uses_rewriter(self, *, mode: str, strictness: Strictness = "auto", collapse: bool = True,
                      rewrite: bool = True) -> bool:
        """The rule: see the module docstring."""
        can_extract = self._extractor is not None or self._load_extractor is not None
        return (rewrite and mode != "bm25" and collapse and str(strictness).strip().lower() != "none"
                and can_extract and bool(self.schema.latent_types))

    def rewriter(self) -> QueryRewriter:
        """The index's rewriter, built once; the extractor is attached when the index holds latent values."""
        if self._rewriter is None:
            rw = QueryRewriter(self.backend, self.index, self.embedder, None, schema=self.schema, store=self._store)
            rw.vocabulary.load(self.schema.type_names)
            if any(rw.vocabulary.values(t) for t in self.schema.type_names):  # else no LLM to load
                rw.extractor = self._extractor if self._extractor is not None else self._load_extractor()  # type: ignore[misc]
            self._rewriter = rw
        return self._rewriter

    # -- search -----------------------------------------------------------------------------
    def search(self, text: str, *, k: int = 10, mode: SearchMode = "dense", strictness: Strictness = "auto",
               min_hits: int | None = None, fusion: Fusion | None = None,
               weights: tuple[float, float] | list[float] | None = None, filter: dict[str, Any] | None = None,
               collapse: bool = True, include_dsl: bool = False, rewrite: bool = True) -> Retrieval:
        """Top-k hits (one per document with `collapse`); `filter` is a user clause or shorthand (`user_filter`).
        `fusion`/`weights` set how hybrid fuses BM25 and k-NN, rewritten or not (default: query.search)."""
        strictness = RewriteOptions(strictness=strictness).strictness  # a bad value fails on every path
        if fusion is not None or weights is not None:
            hybrid_pipeline(fusion, weights)  # so does a bad fusion or weights, whatever the mode
        clause = self.filter_clause(filter)
        self.check_lexical(mode)
        if self.uses_rewriter(mode=mode, strictness=strictness, collapse=collapse, rewrite=rewrite):
            found = self.rewriter().search(text, **_rewrite_options(k, mode, strictness, min_hits, fusion, weights,
                                                                    clause, include_dsl))
            return Retrieval.from_rewritten(found)
        embedder = None if mode == "bm25" else self.embedder
        return Retrieval.from_plain(plain_search(text, backend=self.backend, index=self.index, embedder=embedder,
                                                 k=k, mode=mode, filter=clause, collapse=collapse,
                                                 include_dsl=include_dsl, fusion=fusion, weights=weights))

    async def asearch(self, text: str, *, k: int = 10, mode: SearchMode = "dense", strictness: Strictness = "auto",
                      min_hits: int | None = None, fusion: Fusion | None = None,
                      weights: tuple[float, float] | list[float] | None = None, filter: dict[str, Any] | None = None,
                      collapse: bool = True, include_dsl: bool = False, rewrite: bool = True) -> Retrieval:
        """`search` without blocking the event loop: plain search on an async backend (OpenSearch) embeds in a
        worker thread and awaits the request; everything else runs `search` in a thread."""
        if fusion is not None or weights is not None:
            hybrid_pipeline(fusion, weights)  # a bad value fails on every path, as in `search`
        await asyncio.to_thread(self.check_lexical, mode)
        plain = not await asyncio.to_thread(self.uses_rewriter, mode=mode, strictness=strictness, collapse=collapse,
                                            rewrite=rewrite)
        if self.async_backend is not None and plain:
            if not text.strip():
                raise ValueError("the query text is empty")
            started = time.perf_counter()
            vector = None if mode == "bm25" else (await asyncio.to_thread(self.embedder.encode, [text]))[0].tolist()
            body = build_body(text, mode=mode, k=k, vector=vector,
                              filter=await asyncio.to_thread(self.filter_clause, filter), collapse=collapse,
                              fusion=fusion, weights=weights)
            response = await self.async_backend.search(self.index, body)
            return Retrieval(query=text, index=self.index, mode=mode, total=int(response["hits"]["total"]["value"]),
                             took_ms=round((time.perf_counter() - started) * 1000, 2),
                             hits=collapse_hits(parse_hits(response), k) if collapse else parse_hits(response),
                             dsl=body if include_dsl else None)
        return await asyncio.to_thread(self.search, text, k=k, mode=mode, strictness=strictness, min_hits=min_hits,
                                       fusion=fusion, weights=weights, filter=filter, collapse=collapse,
                                       include_dsl=include_dsl,
                                       rewrite=rewrite)


def _rewrite_options(k: int, mode: str, strictness: Strictness, min_hits: int | None, fusion: str | None,
                     weights: Any, clause: dict[str, Any] | None, include_dsl: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"k": k, "mode": mode, "strictness": strictness, "filter": clause,
                            "include_dsl": include_dsl}
    if min_hits is not None:
        opts["min_hits"] = min_hits
    if fusion is not None:
        opts["fusion"] = fusion
    if weights is not None:
        opts["weights"] = tuple(weights)
    return opts
