"""LangChain integration: `LatentSearchRetriever` (the query rewriter as a retriever) and
`LatentSearchVectorStore` (add texts through the ingest processors, search with k-NN).

The only module that imports langchain-core (`pip install 'latentsearch[langchain]'`). Any LangChain
`Embeddings` object works as the embedder; a latentsearch embedder works as LangChain `Embeddings`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict, Field, PrivateAttr

from latentsearch import dsl
from latentsearch.backends import BulkAction, SearchBackend, open_backend
from latentsearch.cache import ContentCache
from latentsearch.config import Settings, load_settings
from latentsearch.ingest.bulk import BulkWriter, DeadLetter
from latentsearch.ingest.pipeline import default_processors, ensure_index
from latentsearch.ingest.processors import EmbeddingProcessor, Processor
from latentsearch.ingest.records import Chunk
from latentsearch.mappings import schema_from_mapping
from latentsearch.models.embedder import Embedder
from latentsearch.models.factory import get_embedder
from latentsearch.query.retrieval import Retrieval, Retriever, Strictness, mapped_fields, user_filter
from latentsearch.query.search import Fusion, Hit

# ---------------------------------------------------------------- embeddings, both directions


class LangChainEmbedder:
    """A LangChain `Embeddings` object behind latentsearch's embedder interface (`name`,
    `dimension`, `encode`), so ingest processors and searches run on any LangChain model."""

    def __init__(self, embeddings: Embeddings, name: str | None = None):
        self.embeddings = embeddings
        self.name = name or f"langchain:{type(embeddings).__name__}"
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embeddings.embed_query("dimension probe"))
        return self._dimension

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return np.asarray(self.embeddings.embed_query(text), dtype=np.float32)


class LatentSearchEmbeddings(Embeddings):
    """latentsearch's embedder (MiniLM by default, any configured model) as LangChain `Embeddings`."""

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder or get_embedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.encode([text])[0].tolist()


def as_embedder(embedding: Any, settings: Settings | None = None) -> Any:
    """A latentsearch embedder from None (the configured one), an Embedder, or LangChain Embeddings."""
    if embedding is None:
        settings = settings or load_settings()
        return get_embedder(settings.models.embedder, settings.models.device)
    if isinstance(embedding, LatentSearchEmbeddings):
        return embedding.embedder
    if isinstance(embedding, Embeddings):
        return LangChainEmbedder(embedding)
    if hasattr(embedding, "encode") and hasattr(embedding, "dimension"):
        return embedding
    raise TypeError(f"embedding must be LangChain Embeddings or a latentsearch Embedder, got {type(embedding)!r}")


def _encode_query(embedder: Any, text: str) -> list[float]:
    if hasattr(embedder, "encode_query"):
        return embedder.encode_query(text).tolist()
    return embedder.encode([text])[0].tolist()


# ---------------------------------------------------------------- retriever


#: What the retriever adds to a document's own (flat) metadata; the vector store returns the metadata alone.
RETRIEVER_KEYS = ("doc_id", "chunk", "chunk_id", "score", "title", "latent", "explanation")


def hit_document(hit: Hit, explanation: dict[str, Any] | None = None) -> Document:
    """A hit as a Document of the one shape the store returns too: `id` is the document id, `metadata` the
    document's own metadata, flat; the retriever adds doc_id, chunk, chunk_id, score, title, latent entities
    and the rewriter's explanation (these names win over user metadata of the same name)."""
    meta = dict(hit.metadata)
    meta.update(doc_id=hit.doc_id, chunk=hit.chunk, chunk_id=hit.id, score=hit.score, title=hit.title,
                latent=hit.latent, explanation=explanation)
    return Document(page_content=hit.text, metadata=meta, id=hit.doc_id)


def _no_unknown(method: str, kwargs: dict[str, Any], supported: Sequence[str] = ()) -> None:
    """Unknown keyword arguments raise instead of being ignored (e.g. OpenSearchVectorSearch's `efficient_filter=`
    would otherwise give unfiltered results)."""
    unknown = sorted(set(kwargs) - set(supported))
    if unknown:
        raise TypeError(f"{method}() got unsupported keyword argument(s) {unknown}; supported: "
                        f"{', '.join(supported) or 'none'} (filters go in `filter`: OpenSearch DSL or "
                        "{field: value | [values] | {gte: ...}})")


class LatentSearchRetriever(BaseRetriever):
    """Retrieve with the query rewriter: k-NN (or hybrid) with latent-entity filters whose strictness
    adapts per query, merged with the user's metadata filter. Works on all three backends; the async
    path awaits OpenSearch's async client instead of blocking the event loop.

        retriever = LatentSearchRetriever.from_settings(index="papers", k=5)
        docs = retriever.invoke("statins and heart attacks", filter={"year": 2020})
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(description="A latentsearch SearchBackend")
    index: str
    embedder: Any = Field(None, description="latentsearch Embedder or LangChain Embeddings; None = configured one")
    extractor: Any = Field(None, description="LentEx extractor for query entities; None = no latent filtering")
    async_backend: Any = Field(None, description="AsyncOpenSearchBackend for a non-blocking OpenSearch path")
    k: int = Field(4, ge=1)
    search_type: Literal["dense", "hybrid", "mentions"] = Field(
        "dense", description="mentions: the query is an entity type ('airline'); documents that mention one")
    strictness: Strictness = "auto"
    min_hits: int | None = None
    filter: dict[str, Any] | None = Field(None, description="OpenSearch DSL clause or {metadata field: value(s)}")
    use_rewriter: bool = Field(True, description="False forces plain dense/hybrid search (the rewriter's baseline)")
    fusion: Fusion | None = Field(None, description="hybrid: rrf or min_max (default: the fitted one)")
    weights: tuple[float, float] | None = Field(None, description="hybrid min_max: (BM25, k-NN) weights")

    _engine: Any = PrivateAttr(None)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, index: str | None = None, latent: bool = True,
                      **kwargs: Any) -> LatentSearchRetriever:
        """A retriever on the configured backend; with `latent` and an index whose schema lists latent
        types, the LentEx extractor filters on query entities (loaded when the index holds latent values)."""
        settings = settings or load_settings()
        index = index or settings.index
        backend = kwargs.pop("backend", None) or open_backend(settings.backend)
        if "async_backend" not in kwargs and backend.kind == "opensearch":
            from latentsearch.backends.opensearch_async import AsyncOpenSearchBackend

            kwargs["async_backend"] = AsyncOpenSearchBackend.from_config(settings.backend)
        if kwargs.get("embedder") is None:
            kwargs["embedder"] = get_embedder(settings.models.embedder, settings.models.device)
        retriever = cls(backend=backend, index=index, **kwargs)
        retriever._engine = Retriever.from_settings(
            settings, index=index, backend=backend, embedder=as_embedder(retriever.embedder), latent=latent,
            extractor=kwargs.get("extractor"), async_backend=retriever.async_backend)
        return retriever

    def _resolved(self) -> Retriever:
        if self._engine is None:
            self._engine = Retriever(self.backend, self.index, as_embedder(self.embedder), extractor=self.extractor,
                                     async_backend=self.async_backend)
        return self._engine

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(kwargs) - {"k", "search_type", "strictness", "min_hits", "filter", "fusion", "weights"}
        if unknown:
            raise TypeError(f"unknown retriever option(s) {sorted(unknown)}; use k, search_type, strictness, "
                            "min_hits, filter, fusion or weights")
        opts = {"k": self.k, "search_type": self.search_type, "strictness": self.strictness,
                "min_hits": self.min_hits, "filter": self.filter, "fusion": self.fusion, "weights": self.weights}
        opts.update(kwargs)
        return opts

    def _documents(self, result: Retrieval) -> list[Document]:
        return [hit_document(h, result.explanation) for h in result.hits]

    def _mention_documents(self, query: str, opts: dict[str, Any]) -> list[Document]:
        """Mention-type query (NER Retriever vectors): documents with a mention of the type, each once,
        with the matched mentions in `metadata["mentions"]`."""
        from latentsearch.query.entities import search_entities

        if opts.get("filter"):
            raise ValueError("search_type='mentions' takes no filter; filter the returned documents instead")
        found = search_entities(query, backend=self.backend, index=self.index, k=opts["k"])
        return [Document(page_content=h.text, id=h.id, metadata={
            "id": h.id, "doc_id": h.doc_id, "chunk": int(h.id.rsplit("#", 1)[-1]) if "#" in h.id else 0,
            "score": h.score, "title": h.title, "mentions": [m.model_dump() for m in h.mentions],
            "explanation": {"reason": f"documents mentioning an entity of type {query!r} (per-mention vectors)"},
        }) for h in found.hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        opts = self._options(kwargs)
        if opts["search_type"] == "mentions":
            return self._mention_documents(query, opts)
        result = self._resolved().search(query, **_search_options(opts), rewrite=self.use_rewriter)
        return self._documents(result)

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        opts = self._options(kwargs)
        if opts["search_type"] == "mentions":
            import asyncio

            return await asyncio.to_thread(self._mention_documents, query, opts)
        result = await self._resolved().asearch(query, **_search_options(opts), rewrite=self.use_rewriter)
        return self._documents(result)


def _search_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The retriever's options in `Retriever.search` names."""
    return {"k": opts["k"], "mode": opts["search_type"], "strictness": opts["strictness"],
            "min_hits": opts["min_hits"], "filter": opts["filter"], "fusion": opts["fusion"],
            "weights": opts["weights"]}


# ---------------------------------------------------------------- vector store


class LatentSearchVectorStore(VectorStore):
    """A LangChain vector store on a latentsearch index. `add_texts` runs the ingest processors
    (dense vectors, latent entities when the index schema lists types) with the content cache and
    the retrying bulk writer; each text is one chunk `<id>#0` with `doc_id = id`. Searches are plain
    k-NN (`filter`: DSL or `{metadata field: value}`); `as_latent_retriever()` adds the rewriter.
    """

    def __init__(
        self,
        embedding: Embeddings | Embedder | None = None,
        *,
        index: str | None = None,
        settings: Settings | None = None,
        backend: SearchBackend | None = None,
        processors: list[Processor] | None = None,
        async_backend: Any | None = None,
    ):
        self.settings = settings or load_settings()
        self.index = index or self.settings.index
        self.backend = backend or open_backend(self.settings.backend)
        self.embedder = as_embedder(embedding, self.settings)
        self._embedding = embedding if isinstance(embedding, Embeddings) else LatentSearchEmbeddings(self.embedder)
        self._processors = processors
        self.async_backend = async_backend

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def _relevance(self, score: float) -> float:
        return score  # OpenSearch k-NN scores (cosinesimil: (1 + cos) / 2) already lie in [0, 1]

    def _select_relevance_score_fn(self):
        return self._relevance

    # ------------------------------------------------------------ writes

    def _schema_settings(self) -> Settings:
        """Settings whose entity schema is the index's own (so processors fill the index's types)."""
        if self.backend.index_exists(self.index):
            schema = schema_from_mapping(self.backend.get_mapping(self.index))
            if schema is not None:
                return self.settings.model_copy(update={"entities": schema})
        return self.settings

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        _no_unknown("add_texts", kwargs)
        return self._add(list(texts), metadatas, ids)

    def add_embeddings(self, text_embeddings: Iterable[tuple[str, list[float]]], metadatas: list[dict] | None = None,
                       *, ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Add texts with vectors computed elsewhere (same model and dimension as the index's)."""
        _no_unknown("add_embeddings", kwargs)
        pairs = list(text_embeddings)
        return self._add([t for t, _ in pairs], metadatas, ids, vectors=[v for _, v in pairs])

    def _add(self, texts: list[str], metadatas: list[dict] | None, ids: list[str] | None,
             vectors: list[list[float]] | None = None) -> list[str]:
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        ids = [str(i) if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        if not texts:
            return []
        ensure_index(self.backend, self.settings, self.index, self.embedder)
        settings = self._schema_settings()
        chunks = [
            Chunk(doc_id=i, no=0, count=1, text=t, start=0, end=len(t), metadata=dict(m or {}))
            for i, t, m in zip(ids, texts, metadatas or [None] * len(texts))
        ]
        processors = self._processors or default_processors(settings, self.embedder)
        if vectors is not None:  # add_embeddings: the caller's vectors, no embedding pass
            for chunk, vector in zip(chunks, vectors):
                chunk.vector = np.asarray(vector, dtype=np.float32)
            processors = [p for p in processors if not isinstance(p, EmbeddingProcessor)]
        cache = ContentCache(settings.cache_dir / "processors.sqlite") if settings.ingest.cache else None
        try:
            for proc in processors:
                proc(chunks, cache)
        finally:
            if cache is not None:
                cache.close()
        dead = DeadLetter(settings.home / "deadletter" / f"{self.index}-vectorstore.jsonl")
        writer = BulkWriter(self.backend, self.index, dead, batch_size=settings.ingest.write_batch_size,
                            max_retries=settings.ingest.max_retries,
                            backoff_initial_s=settings.ingest.backoff_initial_s,
                            backoff_max_s=settings.ingest.backoff_max_s)
        stats = writer.write(chunks)
        dead.close()
        self.backend.refresh(self.index)
        if stats.failed:
            raise ValueError(f"{stats.failed} of {len(chunks)} texts were rejected by the index; see {dead.path}")
        return ids

    def _chunk_ids(self, ids: Sequence[str]) -> list[str]:
        """Every stored chunk id of these documents (or chunk ids given as such)."""
        if not ids or not self.backend.index_exists(self.index):
            return []
        ids = [str(i) for i in ids]
        query = dsl.bool_query(should=[dsl.terms("doc_id", ids), dsl.ids(ids)], minimum_should_match=1)
        found = self.backend.search(self.index, {"query": query, "size": 10_000, "_source": False})
        return [h["_id"] for h in found["hits"]["hits"]]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents (all their chunks) by id; missing ids are ignored. `ids=None` deletes nothing."""
        if ids is None:
            raise ValueError("give the ids to delete (to drop everything, delete the index)")
        chunk_ids = self._chunk_ids(ids)
        if chunk_ids:
            results = self.backend.bulk(self.index, [BulkAction(id=c, op="delete") for c in chunk_ids], refresh=True)
            bad = [r for r in results if not r.ok]
            if bad:
                raise ValueError(f"could not delete {[r.id for r in bad]}: {bad[0].error}")
        return True

    # ------------------------------------------------------------ reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        if not self.backend.index_exists(self.index):
            return []
        out = []
        for i in ids:
            src = self.backend.get(self.index, f"{i}#0") or self.backend.get(self.index, str(i))
            if src is not None:
                out.append(self._document(str(i), src))
        return out

    @staticmethod
    def _document(chunk_id: str, src: dict[str, Any]) -> Document:
        """The one Document shape (see `hit_document`): id = document id, metadata = its own, flat."""
        doc_id = str(src.get("doc_id", chunk_id.split("#")[0]))
        return Document(page_content=src.get("text", ""), metadata=dict(src.get("metadata") or {}), id=doc_id)

    def _filter(self, filter: dict[str, Any] | None) -> dict[str, Any] | None:
        """The shared filter syntax (`user_filter`) against this index's mapping."""
        if not filter:
            return None
        return user_filter(filter, mapped_fields(self.backend.get_mapping(self.index)))

    def _knn(self, vector: list[float], k: int, filter: dict[str, Any] | None) -> list[tuple[Document, float]]:
        if not self.backend.index_exists(self.index):
            return []
        body = dsl.search_body(dsl.knn("vector", vector, k=k, filter=self._filter(filter)), size=k)
        hits = self.backend.search(self.index, body)["hits"]["hits"]
        return [(self._document(h["_id"], h.get("_source") or {}), float(h.get("_score") or 0.0)) for h in hits]

    def similarity_search_by_vector_with_score(self, embedding: list[float], k: int = 4,
                                               filter: dict[str, Any] | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        _no_unknown("similarity_search_by_vector_with_score", kwargs)
        return self._knn(list(embedding), k, filter)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        _no_unknown("similarity_search_with_score", kwargs)
        return self._knn(_encode_query(self.embedder, query), k, filter)

    def similarity_search(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                          **kwargs: Any) -> list[Document]:
        _no_unknown("similarity_search", kwargs)
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None,
                                    **kwargs: Any) -> list[Document]:
        _no_unknown("similarity_search_by_vector", kwargs)
        return [d for d, _ in self._knn(list(embedding), k, filter)]

    def _similarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                 **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score(query, k, **kwargs)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: dict[str, Any] | None = None,
                                                **kwargs: Any) -> list[Document]:
        """MMR over the `fetch_k` nearest: the candidates' vectors come from the embedding cache
        (sources keep no vectors), so this re-embeds only what the cache lacks."""
        _no_unknown("max_marginal_relevance_search", kwargs)
        pool = self._knn(list(embedding), fetch_k, filter)
        if not pool:
            return []
        chunks = [Chunk(doc_id="mmr", no=i, count=1, text=d.page_content, start=0, end=len(d.page_content))
                  for i, (d, _) in enumerate(pool)]
        cache = ContentCache(self.settings.cache_dir / "processors.sqlite") if self.settings.ingest.cache else None
        try:
            EmbeddingProcessor(self.embedder)(chunks, cache)
        finally:
            if cache is not None:
                cache.close()
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32),
                                            [c.vector for c in chunks], lambda_mult=lambda_mult, k=k)
        return [pool[i][0] for i in chosen]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        _no_unknown("max_marginal_relevance_search", kwargs)
        return self.max_marginal_relevance_search_by_vector(_encode_query(self.embedder, query), k, fetch_k,
                                                            lambda_mult, filter)

    # ------------------------------------------------------------ async: the OpenSearch read path awaits

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        _no_unknown("asimilarity_search_with_score", kwargs)
        if self.async_backend is None:
            return await super().asimilarity_search_with_score(query, k, filter=filter)
        import asyncio

        vector = await asyncio.to_thread(_encode_query, self.embedder, query)
        clause = await asyncio.to_thread(self._filter, filter) if filter else None
        body = dsl.search_body(dsl.knn("vector", vector, k=k, filter=clause), size=k)
        hits = (await self.async_backend.search(self.index, body))["hits"]["hits"]
        return [(self._document(h["_id"], h.get("_source") or {}), float(h.get("_score") or 0.0)) for h in hits]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    # ------------------------------------------------------------ constructors and retrievers

    @classmethod
    def from_documents(cls, documents: list[Document], embedding: Embeddings | None = None,
                       **kwargs: Any) -> LatentSearchVectorStore:
        """Like `from_texts`: `embedding` is optional (default: the configured embedder); ids from the documents."""
        if "ids" not in kwargs and any(d.id for d in documents):
            kwargs["ids"] = [d.id for d in documents]
        return cls.from_texts([d.page_content for d in documents], embedding,
                              [dict(d.metadata) for d in documents], **kwargs)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None, metadatas: list[dict] | None = None,
                   *, ids: list[str] | None = None, **kwargs: Any) -> LatentSearchVectorStore:
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def as_latent_retriever(self, **kwargs: Any) -> LatentSearchRetriever:
        """The rewriter's retriever on this store's index. Latent filtering is active when the index's schema
        lists latent types and holds latent values (texts added while the store's settings had latent types):
        the configured LentEx extractor is then loaded on the first question, and each document's
        `metadata["explanation"]` shows the entities, levels and chosen strictness. Otherwise it is plain
        k-NN and the explanation is None."""
        kwargs.setdefault("async_backend", self.async_backend)
        return LatentSearchRetriever.from_settings(self.settings, index=self.index, backend=self.backend,
                                                   embedder=self.embedder, **kwargs)
