"""Issue 19: paths that used to return wrong or unfiltered results without saying so. Each test fails on
the code before the fix: the shorthand filter matched nothing for text values and refused ranges, the
vector store ignored unknown keyword arguments (`efficient_filter=` gave unfiltered hits), the embedded
engine raised on unmapped fields (OpenSearch answers 0 hits), `from_documents` required `embedding`,
`add_embeddings` did not exist, and the retriever returned another Document shape than the store.

Real parts: MiniLM vectors, SciFact sample abstracts, the embedded engine, /search over loopback HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document

from latentsearch import dsl, load_settings
from latentsearch.query.langchain import LatentSearchRetriever, LatentSearchVectorStore
from latentsearch.query.retrieval import Retriever, user_filter

INDEX = "silent"
JOURNALS = ["The Lancet", "Nature Medicine", "The Lancet", "Cell", "Nature Medicine", "Cell"]
YEARS = [2018, 2019, 2020, 2021, 2022, 2023]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, scifact_sample: Path, embedder) -> LatentSearchVectorStore:
    """Six sample abstracts with string (`journal`) and integer (`year`) metadata, written by the store."""
    home = tmp_path_factory.mktemp("silent-home")
    settings = load_settings(home=home, index=INDEX)
    with scifact_sample.open(encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(len(JOURNALS)), fh)]
    store = LatentSearchVectorStore(embedder, index=INDEX, settings=settings)
    store.add_texts([d["text"] for d in docs], [{"journal": j, "year": y} for j, y in zip(JOURNALS, YEARS)],
                    ids=[d["_id"] for d in docs])
    return store


def _journals(docs: list[Document]) -> list[str]:
    return sorted(d.metadata["journal"] for d in docs)


def test_text_value_shorthand_matches_its_keyword_subfield(store: LatentSearchVectorStore) -> None:
    """`{"journal": "The Lancet"}` used to give [] (a term on the analyzed text field)."""
    found = store.similarity_search("white matter", k=10, filter={"journal": "The Lancet"})
    assert _journals(found) == ["The Lancet", "The Lancet"]
    either = store.similarity_search("white matter", k=10, filter={"journal": ["Cell", "The Lancet"]})
    assert _journals(either) == ["Cell", "Cell", "The Lancet", "The Lancet"]
    # the mapping decides: dynamic strings are text + .keyword, numbers are not
    fields = {"metadata.journal": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
              "metadata.year": {"type": "long"}}
    assert user_filter({"journal": "x", "year": 2020}, fields) == {"bool": {"filter": [
        {"term": {"metadata.journal.keyword": {"value": "x"}}}, {"term": {"metadata.year": {"value": 2020}}}]}}
    assert user_filter({"title": "A title"}, {"title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}}}) \
        == {"term": {"title.keyword": {"value": "A title"}}}
    with pytest.raises(ValueError, match="keyword sub-field"):
        user_filter({"text": "x"}, {"text": {"type": "text"}})


def test_range_operators_in_the_shorthand(store: LatentSearchVectorStore) -> None:
    """`{"year": {"gte": 2020}}` used to raise 'write the clause as OpenSearch DSL'."""
    found = store.similarity_search("white matter", k=10, filter={"year": {"gte": 2020}})
    assert sorted(d.metadata["year"] for d in found) == [2020, 2021, 2022, 2023]
    both = store.similarity_search("white matter", k=10, filter={"year": {"gt": 2018, "lt": 2022},
                                                                 "journal": "Nature Medicine"})
    assert sorted(d.metadata["year"] for d in both) == [2019]
    with pytest.raises(ValueError, match="range operators"):
        user_filter({"year": {"greater": 2020}})


def test_one_filter_syntax_for_the_retriever_and_cli_text(store: LatentSearchVectorStore, embedder) -> None:
    from latentsearch.query.retrieval import parse_filter

    retriever = Retriever(store.backend, INDEX, embedder)
    hits = retriever.search("white matter", k=10, filter={"journal": "The Lancet", "year": {"lte": 2019}}).hits
    assert [h.metadata["year"] for h in hits] == [2018]
    assert parse_filter('{"journal": "Cell"}') == {"journal": "Cell"}
    assert parse_filter("journal=The Lancet, year=2020") == {"journal": "The Lancet", "year": "2020"}
    with pytest.raises(ValueError, match="field=value"):
        parse_filter("journal")


def test_unknown_keyword_arguments_raise(store: LatentSearchVectorStore) -> None:
    """OpenSearchVectorSearch's `efficient_filter=` used to be ignored: unfiltered hits."""
    with pytest.raises(TypeError, match=r"efficient_filter.*supported"):
        store.similarity_search("white matter", k=3, efficient_filter={"term": {"metadata.year": 2020}})
    with pytest.raises(TypeError, match="boolean_filter"):
        store.similarity_search_with_score("white matter", k=3, boolean_filter={})
    with pytest.raises(TypeError, match="space_type"):
        store.max_marginal_relevance_search("white matter", k=2, space_type="l2")
    with pytest.raises(TypeError, match="bulk_size"):
        store.add_texts(["x"], bulk_size=10)


def test_unmapped_field_gives_zero_hits_like_opensearch(store: LatentSearchVectorStore) -> None:
    """The embedded engine used to raise `field ... is not mapped`."""
    backend = store.backend
    for query in (dsl.term("latent.chemical", "aspirin"), dsl.terms("metadata.colour", ["red"]),
                  {"range": {"metadata.pages": {"gte": 3}}}, dsl.match("abstract", "white matter")):
        assert backend.search(INDEX, {"query": query})["hits"]["total"]["value"] == 0
    inside = dsl.bool_query(should=[dsl.term("latent.chemical", "aspirin"), dsl.match_all()],
                            minimum_should_match=1)
    assert backend.search(INDEX, {"query": inside})["hits"]["total"]["value"] == len(JOURNALS)
    assert store.similarity_search("white matter", k=5, filter={"latent.chemical": "aspirin"}) == []


def test_one_document_shape_for_store_and_retriever(store: LatentSearchVectorStore, embedder) -> None:
    """Retriever ids used to be `s1#0` with user metadata nested in metadata['metadata']; the store's `s1` flat."""
    from_store = store.similarity_search("white matter", k=1)[0]
    retriever = LatentSearchRetriever(backend=store.backend, index=INDEX, embedder=embedder, k=1)
    from_retriever = retriever.invoke("white matter")[0]
    assert from_retriever.id == from_store.id and "#" not in from_store.id
    assert from_store.metadata == {"journal": from_store.metadata["journal"], "year": from_store.metadata["year"]}
    assert {k: from_retriever.metadata[k] for k in from_store.metadata} == from_store.metadata
    assert "metadata" not in from_retriever.metadata
    assert from_retriever.metadata["doc_id"] == from_store.id and from_retriever.metadata["chunk_id"].startswith(
        from_store.id + "#")


def test_from_documents_without_embedding_and_add_embeddings(tmp_path: Path, embedder) -> None:
    settings = load_settings(home=tmp_path / "home", index="fromdocs")
    docs = [Document(page_content="Aspirin lowers the risk of heart attack.", metadata={"n": 1}, id="a"),
            Document(page_content="Zebrafish regenerate their fins.", metadata={"n": 2}, id="b")]
    store = LatentSearchVectorStore.from_documents(docs, index="fromdocs", settings=settings)  # no `embedding`
    top = store.similarity_search("heart attack prevention", k=1)[0]
    assert (top.id, top.metadata) == ("a", {"n": 1})
    vector = embedder.encode(["Penguins live in Antarctica."])[0].tolist()
    assert store.add_embeddings([("Penguins live in Antarctica.", vector)], [{"n": 3}], ids=["c"]) == ["c"]
    hits = store.similarity_search_by_vector(vector, k=1)
    assert hits[0].id == "c" and hits[0].metadata == {"n": 3}
    with pytest.raises(TypeError, match="engine"):
        LatentSearchVectorStore.from_documents(docs, index="fromdocs", settings=settings, engine="nmslib")


def test_search_endpoint_takes_the_shorthand(store: LatentSearchVectorStore) -> None:
    """/search takes the same shorthand as /rag, `ask` and LangChain (real uvicorn on loopback)."""
    httpx = pytest.importorskip("httpx")
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from tests.test_serve import LiveServer

    config = ServeConfig(settings=store.settings.model_copy(update={"index": INDEX}), json_logs=False)
    with LiveServer(create_app(config)) as live:
        r = httpx.post(f"{live.url}/search", json={"query": "white matter", "k": 10,
                                                    "filter": {"journal": "The Lancet"}}, timeout=120)
        assert r.status_code == 200, r.text
        assert sorted(h["metadata"]["journal"] for h in r.json()["hits"]) == ["The Lancet", "The Lancet"]
        r = httpx.post(f"{live.url}/search", json={"query": "white matter", "filter": {"year": {"above": 1}}},
                       timeout=120)
        assert r.status_code == 422 and "range operators" in r.text


def test_chat_refuses_tools_and_json_modes_instead_of_dropping_them(store: LatentSearchVectorStore) -> None:
    """`tools` and `response_format` used to be dropped silently (a plain answer, no tool call, no JSON)."""
    httpx = pytest.importorskip("httpx")
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from tests.test_serve import LiveServer

    config = ServeConfig(settings=store.settings, json_logs=False, preload=[])
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    with LiveServer(create_app(config)) as live:
        url = f"{live.url}/v1/chat/completions"
        r = httpx.post(url, json={"model": "m", "messages": messages, "tools": [tool]}, timeout=60)
        assert r.status_code == 400 and "tools" in r.text, r.text
        r = httpx.post(url, json={"model": "m", "messages": messages, "tool_choice": "required"}, timeout=60)
        assert r.status_code == 400
        r = httpx.post(url, json={"model": "m", "messages": messages, "response_format": {"type": "json_object"}},
                       timeout=60)
        assert r.status_code == 400 and "response_format" in r.text and "text" in r.text, r.text
