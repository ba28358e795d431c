"""LatentSearchRetriever and LatentSearchVectorStore beyond the standard suites: real MiniLM vectors
on SciFact sample abstracts, the embedded engine, and the OpenSearch / Elasticsearch backends over
real HTTP (opensearch-py's sync and async clients, elasticsearch-py) against loopback servers.

The OpenSearch stand-in answers `_search`/`_msearch`/`_mapping` by running the request on the
embedded engine (osmem has no k-NN), so the clients, the wire format and the response parsing are
real; what is not proven is that a real OpenSearch ranks identically (the k-NN oracles cover that).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document

from latentsearch import load_settings
from latentsearch.backends import BulkAction, open_backend
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.backends.opensearch_async import AsyncOpenSearchBackend
from latentsearch.config import BackendConfig
from latentsearch.query.langchain import (
    LangChainEmbedder,
    LatentSearchEmbeddings,
    LatentSearchRetriever,
    LatentSearchVectorStore,
)
from latentsearch.query.retrieval import user_filter
from tests.oracles.http_fakes import FakeElasticsearch, LoopbackServer, Recorded

INDEX = "scifact-lc"
N_DOCS = 20
QUESTION = "diffusion tensor MRI of cerebral white matter in newborn infants"
WHITE_MATTER_DOC = "4983"  # the sample's first abstract: diffusion tensor MRI of newborn white matter


@pytest.fixture(scope="module")
def sample_docs(scifact_sample: Path) -> list[dict[str, Any]]:
    with scifact_sample.open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(N_DOCS), fh)]


@pytest.fixture(scope="module")
def scifact_backend(tmp_path_factory: pytest.TempPathFactory, scifact_sample: Path, embedder) -> EmbeddedBackend:
    from latentsearch.ingest.pipeline import ingest

    home = tmp_path_factory.mktemp("lc-home")
    settings = load_settings(home=home, index=INDEX)
    ingest(scifact_sample, settings, limit=N_DOCS, progress=False)
    backend = open_backend(settings.backend)
    assert isinstance(backend, EmbeddedBackend)
    return backend


def test_user_filter_shorthand_and_dsl() -> None:
    assert user_filter(None) is None
    assert user_filter({"year": 2020}) == {"term": {"metadata.year": {"value": 2020}}}
    both = user_filter({"journal": ["a", "b"], "latent.disease": "flu"})
    assert both == {"bool": {"filter": [{"terms": {"metadata.journal.keyword": ["a", "b"]}},
                                        {"term": {"latent.disease": {"value": "flu"}}}]}}
    clause = {"range": {"metadata.year": {"gte": 2000}}}
    assert user_filter(clause) is clause
    assert user_filter({"year": {"gte": 2000}}) == clause
    with pytest.raises(ValueError, match="OpenSearch DSL"):
        user_filter({"year": {"match": 2000}})


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_retriever_start(self, serialized, query, *, tags=None, **kwargs):
        self.events.append(("start", (query, tuple(tags or ()))))

    def on_retriever_end(self, documents, **kwargs):
        self.events.append(("end", len(documents)))


def test_retriever_documents_metadata_filters_and_callbacks(scifact_backend, embedder) -> None:
    retriever = LatentSearchRetriever(backend=scifact_backend, index=INDEX, embedder=embedder, k=5,
                                      tags=["latentsearch"])
    recorder = _Recorder()
    docs = retriever.invoke(QUESTION, config={"callbacks": [recorder], "tags": ["run-tag"]})
    assert len(docs) == 5 and len({d.metadata["doc_id"] for d in docs}) == 5  # one chunk per document
    top = docs[0]
    assert top.metadata["doc_id"] == WHITE_MATTER_DOC
    assert top.id == top.metadata["doc_id"] == WHITE_MATTER_DOC  # the store's Document shape: id = document id
    assert top.metadata["chunk_id"] == f"{WHITE_MATTER_DOC}#{top.metadata['chunk']}"
    assert {"doc_id", "chunk", "chunk_id", "score", "title", "latent", "explanation"} <= set(top.metadata)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert "diffusion" in top.page_content.lower()
    # callbacks and tags behave like any retriever's
    assert recorder.events[0] == ("start", (QUESTION, ("run-tag", "latentsearch")))
    assert recorder.events[-1] == ("end", 5)
    # a user filter (shorthand on a chunk field) is applied inside k-NN: only the named documents come back
    others = [d.metadata["doc_id"] for d in docs[1:3]]
    filtered = retriever.invoke(QUESTION, filter={"doc_id": others}, k=5)
    assert sorted(d.metadata["doc_id"] for d in filtered) == sorted(others)
    # per-call k
    assert len(retriever.invoke(QUESTION, k=2)) == 2
    with pytest.raises(TypeError, match="unknown retriever option"):
        retriever.invoke(QUESTION, top_k=2)


async def test_retriever_async_matches_sync_on_embedded(scifact_backend, embedder) -> None:
    retriever = LatentSearchRetriever(backend=scifact_backend, index=INDEX, embedder=embedder, k=4)
    sync_docs = retriever.invoke(QUESTION)
    async_docs = await retriever.ainvoke(QUESTION)
    assert [d.id for d in async_docs] == [d.id for d in sync_docs]
    many = await asyncio.gather(*(retriever.ainvoke(QUESTION, k=k) for k in (1, 2, 3)))
    assert [len(d) for d in many] == [1, 2, 3]


def test_retriever_hybrid_without_extractor_is_plain_search(scifact_backend, embedder) -> None:
    retriever = LatentSearchRetriever(backend=scifact_backend, index=INDEX, embedder=embedder, k=3,
                                      search_type="hybrid")
    docs = retriever.invoke(QUESTION)
    assert docs[0].metadata["doc_id"] == WHITE_MATTER_DOC
    assert docs[0].metadata["explanation"] is None  # no extractor: the one decision picks plain search


def _opensearch_over(engine: EmbeddedBackend):
    """An OpenSearch HTTP API whose searches run on `engine` (for the client/wire/parse path)."""

    def respond(req: Recorded):
        parts = [p for p in req.path.split("/") if p]
        index = parts[0] if parts else ""
        if req.method == "HEAD" and len(parts) == 1:
            return (200 if engine.index_exists(index) else 404), {}, None
        if len(parts) == 2 and parts[1] == "_mapping":
            return 200, {}, {index: {"mappings": engine.get_mapping(index)}}
        if len(parts) == 2 and parts[1] == "_search":
            return 200, {}, engine.search(index, req.json())
        if len(parts) == 2 and parts[1] == "_msearch":
            lines = req.ndjson()
            found = engine.msearch(index, lines[1::2])
            return 200, {}, {"took": 1, "responses": [{**r, "status": 200} for r in found]}
        return 400, {}, {"error": {"type": "not_faked", "reason": f"{req.method} {req.path}"}, "status": 400}

    return LoopbackServer(respond)


async def test_retriever_on_opensearch_sync_and_async_clients(scifact_backend, embedder) -> None:
    with _opensearch_over(scifact_backend) as sync_server, _opensearch_over(scifact_backend) as async_server:
        backend = open_backend(BackendConfig(kind="opensearch", url=sync_server.url, timeout_s=30))
        async_backend = AsyncOpenSearchBackend.from_config(BackendConfig(kind="opensearch", url=async_server.url))
        try:
            retriever = LatentSearchRetriever(backend=backend, async_backend=async_backend, index=INDEX,
                                              embedder=embedder, k=3)
            direct = LatentSearchRetriever(backend=scifact_backend, index=INDEX, embedder=embedder, k=3)
            expected = [d.id for d in direct.invoke(QUESTION)]
            assert [d.id for d in retriever.invoke(QUESTION)] == expected
            assert not async_server.recorded(path_suffix="/_search")
            async_docs = await retriever.ainvoke(QUESTION)
            assert [d.id for d in async_docs] == expected
            # the async call went out on the async client (its own server), not through the sync one
            sent = async_server.recorded("POST", "/_search")
            assert len(sent) == 1 and sent[0].json()["query"]["knn"]["vector"]["k"] >= 3
            assert all(d.metadata["latent"] == {} and d.metadata["title"] for d in async_docs)
            # the vector store's async search also goes out on the async client
            store = LatentSearchVectorStore(embedder, index=INDEX, backend=backend, async_backend=async_backend)
            sync_hits = [d.page_content for d in store.similarity_search(QUESTION, k=2)]
            assert [d.page_content for d in await store.asimilarity_search(QUESTION, k=2)] == sync_hits
            assert len(async_server.recorded("POST", "/_search")) == 2
        finally:
            await async_backend.close()
            backend.close()


def test_retriever_on_elasticsearch_translates_and_parses(embedder, sample_docs) -> None:
    fake = FakeElasticsearch()
    with LoopbackServer(fake) as server:
        backend = open_backend(BackendConfig(kind="elasticsearch", url=server.url))
        from latentsearch.ingest.pipeline import ensure_index

        ensure_index(backend, load_settings(), "es-lc", embedder)
        docs = sample_docs[:3]
        vectors = embedder.encode([d["text"] for d in docs])
        backend.bulk("es-lc", [BulkAction(id=f"{d['_id']}#0", source={
            "doc_id": d["_id"], "chunk": {"no": 0, "count": 1}, "title": d["title"], "text": d["text"],
            "vector": v.tolist(), "metadata": {"year": 2020}}) for d, v in zip(docs, vectors)])
        retriever = LatentSearchRetriever(backend=backend, index="es-lc", embedder=embedder, k=3)
        found = retriever.invoke(QUESTION, filter={"year": 2020})
        # the stand-in runs the translated k-NN (embedded engine): all three, the white-matter abstract first
        assert sorted(d.metadata["doc_id"] for d in found) == sorted(d["_id"] for d in docs)
        assert found[0].metadata["doc_id"] == WHITE_MATTER_DOC
        assert all(d.metadata["year"] == 2020 for d in found)  # one Document shape: user metadata is flat
        bodies = [b for r in server.recorded("POST") if r.path.endswith(("/_search", "/_msearch"))
                  for b in (r.ndjson()[1::2] if r.path.endswith("_msearch") else [r.json()])]
        knn = [b["knn"] for b in bodies if "knn" in b] + [b["query"]["knn"] for b in bodies if "knn" in b.get("query", {})]
        assert knn and knn[0]["field"] == "vector" and "query_vector" in knn[0]
        assert "metadata.year" in json.dumps(knn[0].get("filter"))  # the user filter went inside ES knn
        backend.close()


def test_vector_store_minilm_semantics_filters_mmr_and_delete(home: Path, sample_docs, embedder) -> None:
    store = LatentSearchVectorStore(index="lc-store")  # the configured embedder (MiniLM)
    docs = sample_docs[:12]
    ids = store.add_texts([d["text"] for d in docs], [{"title": d["title"], "n": i} for i, d in enumerate(docs)],
                          ids=[d["_id"] for d in docs])
    assert ids == [d["_id"] for d in docs]
    top = store.similarity_search(QUESTION, k=1)[0]
    assert top.id == WHITE_MATTER_DOC and top.metadata == {"title": docs[0]["title"], "n": 0}
    with_scores = store.similarity_search_with_score(QUESTION, k=3)
    assert 0.0 <= with_scores[-1][1] <= with_scores[0][1] <= 1.0
    by_vector = store.similarity_search_by_vector(embedder.encode([QUESTION])[0].tolist(), k=3)
    assert [d.id for d in by_vector] == [d.id for d, _ in with_scores]
    # metadata shorthand filter inside k-NN
    assert [d.metadata["n"] for d in store.similarity_search(QUESTION, k=5, filter={"n": [3, 7]})] in ([3, 7], [7, 3])
    # MMR skips a near-duplicate that plain similarity ranks second
    store.add_texts([docs[0]["text"] + " "], [{"copy": True}], ids=["copy-of-4983"])
    plain = [d.id for d in store.similarity_search(QUESTION, k=2)]
    assert set(plain) == {WHITE_MATTER_DOC, "copy-of-4983"}
    mmr = [d.id for d in store.max_marginal_relevance_search(QUESTION, k=2, fetch_k=8, lambda_mult=0.3)]
    assert mmr[0] in plain and len(set(mmr) & set(plain)) == 1
    # delete and get_by_ids
    store.delete(["copy-of-4983", "does-not-exist"])
    assert [d.id for d in store.get_by_ids([WHITE_MATTER_DOC, "copy-of-4983"])] == [WHITE_MATTER_DOC]
    # the latent retriever on the same index (documents carry latentsearch metadata)
    latent_docs = store.as_latent_retriever(k=2).invoke(QUESTION)
    assert latent_docs[0].metadata["doc_id"] == WHITE_MATTER_DOC and "explanation" in latent_docs[0].metadata
    with pytest.raises(ValueError, match="ids"):
        store.add_texts(["a", "b"], ids=["1"])


def test_embeddings_adapters_round_trip(embedder) -> None:
    lc = LatentSearchEmbeddings(embedder)
    back = LangChainEmbedder(lc, name="wrapped")
    assert back.dimension == embedder.dimension == len(lc.embed_query("x"))
    a = back.encode(["white matter", "prion"])
    b = embedder.encode(["white matter", "prion"])
    assert abs(a - b).max() < 1e-5


@pytest.mark.slow  # loads SmolLM2 + the LoRA adapter and generates (about a minute on 2 busy cores)
def test_vector_store_runs_the_latent_processor(home: Path, sample_docs) -> None:
    """add_texts goes through the enrichment processors: an index whose schema lists a latent type gets
    `latent.<type>` filled by the LentEx extractor (SmolLM2 + LoRA)."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    settings = load_settings(entities={"text_type": "biomedical abstract", "latent_types": ["disease"]})
    store = LatentSearchVectorStore(DeterministicFakeEmbedding(size=8), index="lc-latent", settings=settings)
    ids = store.add_documents([Document(page_content=sample_docs[0]["text"][:600], metadata={"k": 1})])
    source = store.backend.get("lc-latent", f"{ids[0]}#0")
    assert source["metadata"] == {"k": 1}
    assert source["latent"]["disease"] and all(isinstance(v, str) and v for v in source["latent"]["disease"])


MENTION_DOCS = {
    "air": "Our Lufthansa flight to Frankfurt was delayed again, so we rebooked with KLM.",
    "dino": "The kids loved the Tyrannosaurus and the Triceratops skeletons at the museum.",
    "river": "We kayaked down the Danube for a week and then followed the Rhine north.",
}


def _mention_head_trained() -> bool:
    from latentsearch.models.mention_head import ARTIFACT

    return (ARTIFACT / "head.safetensors").is_file()


@pytest.mark.skipif(not _mention_head_trained(), reason="the mention head (issue 4) is not trained in this checkout")
@pytest.mark.slow  # spaCy + a SmolLM2 pass per text for the mention vectors
def test_mention_type_queries_through_the_vector_store_and_retriever(home: Path) -> None:
    """add_texts with the mention processor on (spaCy spans + SmolLM2 V vectors + head), then a
    mention-type query ('airline') through the retriever: each document once, matched mentions attached."""
    settings = load_settings(ingest={"mentions": True, "latent": False})
    store = LatentSearchVectorStore(index="lc-mentions", settings=settings)
    store.add_texts(list(MENTION_DOCS.values()), ids=list(MENTION_DOCS))
    retriever = store.as_latent_retriever(k=2, search_type="mentions")
    for query, want in (("airline", "air"), ("dinosaur", "dino")):
        docs = retriever.invoke(query)
        assert docs[0].metadata["doc_id"] == want and len({d.metadata["doc_id"] for d in docs}) == len(docs)
        assert docs[0].metadata["mentions"][0]["text"] in docs[0].page_content
    assert [d.metadata["doc_id"] for d in asyncio.run(retriever.ainvoke("river"))][:1] == ["river"]
    with pytest.raises(ValueError, match="no filter"):
        retriever.invoke("airline", filter={"x": 1})
