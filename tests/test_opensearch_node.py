"""latentsearch against a REAL OpenSearch 2.19.1 node (tests/opensearch_node.py): the backend, the mappings,
k-NN with a filter inside, nested k-NN over mentions, hybrid (neural-search), the query rewriter's one-_msearch
strictness ladder through the Retriever, the CLI with --url, and ML Commons setup. Where a result can be
computed on the embedded engine too, both must agree (the node is the oracle)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from latentsearch import dsl
from latentsearch.backends import open_backend
from latentsearch.backends.base import BackendError, BulkAction, IndexNotFoundError
from latentsearch.backends.opensearch import OpenSearchBackend
from latentsearch.config import BackendConfig, EntitySchema
from latentsearch.mappings.builder import index_body, schema_from_mapping

pytestmark = pytest.mark.opensearch_node

DIM = 4
SCHEMA = EntitySchema(latent_types=["disease", "drug"])


def backend_for(url: str) -> OpenSearchBackend:
    backend = open_backend(BackendConfig(kind="opensearch", url=url, timeout_s=30.0, max_retries=1))
    assert isinstance(backend, OpenSearchBackend)
    return backend


@pytest.fixture
def backend(opensearch_node):
    with backend_for(opensearch_node.url) as b:
        yield b


def small_body() -> dict:
    body = index_body("opensearch", SCHEMA, dimension=DIM, embedder="test-embedder")
    # the mention vectors get the same small dimension (index_body sizes them for the trained head)
    body["mappings"]["properties"]["mentions"]["properties"]["vector"]["dimension"] = DIM
    body["mappings"]["_meta"]["latentsearch"]["mention_dimension"] = DIM
    return body


def doc(n: int, *, diseases: list[str], drugs: list[str] | None = None, text: str = "") -> dict:
    return {
        "doc_id": f"d{n}",
        "chunk": {"no": 0, "count": 1},
        "title": f"title {n}",
        "text": text or f"document number {n}",
        "vector": [1.0, float(n), 0.0, 0.5],
        "latent": {"disease": diseases, "drug": drugs or []},
        "mentions": [
            {"text": f"m{n}a", "type": "disease", "start": 0, "end": 2, "vector": [0.1, 0.2, 0.3, float(n)]},
            {"text": f"m{n}b", "type": "drug", "start": 3, "end": 5, "vector": [float(n), 0.2, -0.3, 0.1]},
        ],
    }


DOCS = [
    doc(1, diseases=["flu"], drugs=["aspirin"], text="fever and cough"),
    doc(2, diseases=["flu", "covid"], text="cough with loss of smell"),
    doc(3, diseases=["diabetes"], drugs=["insulin"], text="thirst and fatigue"),
    doc(4, diseases=["covid"], drugs=["aspirin", "heparin"], text="cough and clots"),
    doc(5, diseases=[], drugs=["insulin"], text="a note on insulin pumps"),
]


@pytest.fixture
def filled(backend, os_index, tmp_path):
    """The same five documents on the node (index `os_index`) and on an embedded engine."""
    from latentsearch.backends.embedded import EmbeddedBackend

    assert backend.create_index(os_index, small_body()) is True
    results = backend.bulk(os_index, [BulkAction(id=d["doc_id"], source=d) for d in DOCS], refresh=True)
    assert all(r.ok for r in results), results
    emb = EmbeddedBackend(tmp_path / "db")
    emb.create_index(os_index, small_body())
    assert all(r.ok for r in emb.bulk(os_index, [BulkAction(id=d["doc_id"], source=copy.deepcopy(d)) for d in DOCS],
                                      refresh=True))
    yield backend, emb, os_index
    emb.close()


def ids(response: dict) -> list[str]:
    return [h["_id"] for h in response["hits"]["hits"]]


# ------------------------------------------------------------------------------- backend
def test_plugins_loaded(opensearch_node):
    """What the launcher brings up: k-NN always; neural-search and ML Commons where they resolved."""
    assert "opensearch-knn" in opensearch_node.plugins
    print("plugins:", sorted(opensearch_node.plugins), "startup", round(opensearch_node.startup_s, 1), "s")


def test_index_from_mappings_meta_and_lifecycle(backend, os_index):
    body = small_body()
    assert backend.create_index(os_index, body) is True
    assert backend.create_index(os_index, body, exist_ok=True) is False
    with pytest.raises(BackendError):
        backend.create_index(os_index, body)
    assert backend.index_exists(os_index) and os_index in backend.list_indices()
    mapping = backend.get_mapping(os_index)
    meta = mapping["_meta"]["latentsearch"]
    assert meta["embedder"] == "test-embedder" and meta["dimension"] == DIM
    assert schema_from_mapping(mapping) == SCHEMA  # _meta round-trips through the real cluster
    props = mapping["properties"]
    assert props["vector"]["type"] == "knn_vector" and props["vector"]["method"]["engine"] == "lucene"
    assert props["mentions"]["type"] == "nested"
    info = backend.info(os_index)
    assert info.docs == 0 and info.backend == "opensearch"
    assert backend.delete_index(os_index) is True
    assert backend.delete_index(os_index) is False
    with pytest.raises(IndexNotFoundError):
        backend.search(os_index, {"query": {"match_all": {}}})
    with pytest.raises(IndexNotFoundError):
        backend.count(os_index)


def test_bulk_per_item_errors_do_not_stop_the_rest(backend, os_index):
    backend.create_index(os_index, small_body())
    bad_dim = doc(7, diseases=["flu"])
    bad_dim["vector"] = [1.0, 2.0]
    bad_type = doc(8, diseases=["flu"])
    bad_type["chunk"]["no"] = "not a number"
    actions = [BulkAction(id="a", source=doc(6, diseases=["flu"])), BulkAction(id="b", source=bad_dim),
               BulkAction(id="c", source=bad_type), BulkAction(id="d", source=doc(9, diseases=["covid"])),
               BulkAction(id="zz", op="delete")]
    results = backend.bulk(os_index, actions, refresh=True)
    assert [r.id for r in results] == ["a", "b", "c", "d", "zz"]
    assert [r.ok for r in results] == [True, False, False, True, True]  # deleting a missing id is not an error
    assert results[1].status == 400 and "dimension" in (results[1].error or "")
    assert results[2].status == 400 and results[2].error_type == "mapper_parsing_exception"
    assert not any(r.retryable for r in results)
    assert backend.count(os_index) == 2
    assert backend.get(os_index, "a")["doc_id"] == "d6" and backend.get(os_index, "b") is None


def test_knn_with_filter_inside(filled):
    """The filter goes inside the k-NN clause (efficient filtering): k hits among the filtered documents."""
    backend, emb, index = filled
    flt = dsl.terms("latent.disease", ["covid"])
    body = {"query": dsl.knn("vector", [1.0, 4.0, 0.0, 0.5], k=2, filter=flt), "size": 10}
    got = ids(backend.search(index, copy.deepcopy(body)))
    assert got == ["d4", "d2"]
    assert got == ids(emb.search(index, copy.deepcopy(body)))
    # radial search (min_score) with a filter agrees too
    radial = {"query": dsl.knn("vector", [1.0, 4.0, 0.0, 0.5], min_score=0.95, filter=dsl.term("latent.drug", "insulin"))}
    assert sorted(ids(backend.search(index, copy.deepcopy(radial)))) == sorted(ids(emb.search(index, radial)))


def test_msearch_and_count(filled):
    backend, emb, index = filled
    bodies = [{"query": dsl.term("latent.disease", "flu")}, {"query": dsl.term("latent.drug", "insulin"), "size": 1},
              {"query": dsl.knn("vector", [1.0, 1.0, 0.0, 0.5], k=3)}]
    node = backend.msearch(index, copy.deepcopy(bodies))
    local = emb.msearch(index, copy.deepcopy(bodies))
    assert [sorted(ids(r)) for r in node] == [sorted(ids(r)) for r in local]
    assert [r["hits"]["total"]["value"] for r in node] == [r["hits"]["total"]["value"] for r in local] == [2, 2, 3]
    assert backend.count(index, dsl.term("latent.disease", "covid")) == 2


def test_msearch_item_error_raises_with_reason(filled):
    backend, _, index = filled
    with pytest.raises(BackendError) as info:
        backend.msearch(index, [{"query": {"match_all": {}}}, {"query": {"knn": {"vector": {"vector": [1.0], "k": 1}}}}])
    assert "dimension" in str(info.value).lower() or "vector" in str(info.value).lower()


@pytest.mark.parametrize("score_mode", ["max", "avg", "sum", "min"])
def test_nested_knn_over_mentions(filled, score_mode):
    """Nested k-NN over `mentions.vector` (k counts documents) with score_mode, expand_nested_docs and inner
    hits: the project's mention-type clause, on the node and the embedded engine."""
    from query.entities import mention_type_clause

    backend, emb, index = filled
    clause = mention_type_clause("x", k=3, vector=[3.0, 0.2, -0.3, 0.1], inner_hits=2)
    clause["nested"]["score_mode"] = score_mode
    body = {"query": clause, "size": 10}
    node = backend.search(index, copy.deepcopy(body))
    local = emb.search(index, copy.deepcopy(body))
    assert ids(node) == ids(local) and len(ids(node)) == 3
    for a, b in zip(node["hits"]["hits"], local["hits"]["hits"]):
        assert a["_score"] == pytest.approx(b["_score"], abs=1e-4)
        inner_a = [h["_source"]["text"] for h in a["inner_hits"]["mentions"]["hits"]["hits"]]
        inner_b = [h["_source"]["text"] for h in b["inner_hits"]["mentions"]["hits"]["hits"]]
        assert inner_a == inner_b


# ----------------------------------------------------- the rewriter's strictness ladder (one _msearch)
FIELDS = ["oncology", "immunology", "neuroscience", "genetics", "cardiology", "microbiology"]
N_SCIFACT = 40


class FixedExtractor:
    """The question's entities, fixed: the test is about the engines, not the LLM."""

    fingerprint = "fixed"

    def __init__(self, values: list[str]):
        self.values = values

    def extract(self, texts, text_type, latent_entity_type, options=None):
        return [list(self.values) for _ in texts]


@pytest.fixture(scope="module")
def scifact_pair(opensearch_node, embedder, tmp_path_factory):
    """40 SciFact sample abstracts (MiniLM vectors, synthetic `research_field` values) on the node and on an
    embedded engine, from the project's own index body."""
    from latentsearch.backends.embedded import EmbeddedBackend
    from latentsearch.samples import SAMPLE_CORPUS

    schema = EntitySchema(text_type="biomedical abstract", latent_types=[{"name": "research_field"}])
    body = index_body("opensearch", schema, dimension=embedder.dimension, embedder="minilm")
    rows = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()[:N_SCIFACT]]
    vectors = embedder.encode([f"{r['title']}. {r['text']}" for r in rows])
    actions = []
    for i, (r, v) in enumerate(zip(rows, vectors)):
        fields = sorted({FIELDS[i % len(FIELDS)], FIELDS[(i * 7 + 2) % len(FIELDS)]})[: 1 + i % 2]
        src = {"doc_id": str(r["_id"]), "chunk": {"no": 0, "count": 1}, "title": r["title"], "text": r["text"],
               "vector": np.asarray(v, dtype=np.float32).tolist(), "latent": {"research_field": fields}}
        actions.append(BulkAction(id=f"{r['_id']}#0", source=src))
    index = "scifact-rewriter-node"
    node = backend_for(opensearch_node.url)
    node.delete_index(index)
    node.create_index(index, copy.deepcopy(body))
    assert all(r.ok for r in node.bulk(index, copy.deepcopy(actions), refresh=True))
    emb = EmbeddedBackend(tmp_path_factory.mktemp("rw-node") / "db")
    emb.create_index(index, copy.deepcopy(body))
    assert all(r.ok for r in emb.bulk(index, copy.deepcopy(actions), refresh=True))
    yield node, emb, index, rows
    node.delete_index(index)
    node.close()
    emb.close()


REWRITER_CASES = [
    (["oncology"], "auto"), (["oncology", "genetics"], "auto"), (["oncology", "genetics"], "strict"),
    (["immunology", "cardiology", "neuroscience"], "loose"), (["immunology", "cardiology", "neuroscience"], 2),
    (["immunology", "cardiology", "neuroscience"], "67%"), (["genetics", "microbiology"], "auto"),
    (["zzqx-unknown-field"], "auto"),
]


@pytest.mark.parametrize(("values", "strictness"), REWRITER_CASES, ids=[f"{'+'.join(v)}:{s}" for v, s in REWRITER_CASES])
@pytest.mark.parametrize("promotion", ["boost", "tier"])
def test_rewriter_ladder_same_on_both_engines(scifact_pair, embedder, values, strictness, promotion):
    """One `_msearch` with every strictness level (msm = n .. 1, then unfiltered), the level choice and the final
    hits: identical on the node and the embedded engine, through the Retriever the CLI/server/LangChain use."""
    from latentsearch.query.retrieval import Retriever

    node, emb, index, rows = scifact_pair
    question = rows[3]["title"]
    results = []
    for backend in (node, emb):
        retriever = Retriever(backend, index, embedder, extractor=FixedExtractor(values))
        assert retriever.uses_rewriter(mode="dense", strictness=strictness)
        rw = retriever.rewriter().search(question, k=8, strictness=strictness, promotion=promotion, min_hits=3)
        results.append(rw)
    a, b = results
    ea, eb = a.explanation, b.explanation
    assert [m.values for m in ea.entities] == [m.values for m in eb.entities]
    assert [(r.msm, r.hits) for r in ea.levels] == [(r.msm, r.hits) for r in eb.levels]
    assert [(r.msm, r.above_floor) for r in ea.levels] == [(r.msm, r.above_floor) for r in eb.levels]
    assert ea.chosen_msm == eb.chosen_msm and ea.reason == eb.reason
    assert ea.floor == pytest.approx(eb.floor, abs=1e-4)
    assert a.total == b.total
    assert [h.doc_id for h in a.hits] == [h.doc_id for h in b.hits]
    assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-4)


def test_retriever_plain_and_filtered_search(scifact_pair, embedder):
    """Plain dense search with a user filter and collapse: same hits on both engines."""
    from latentsearch.query.retrieval import Retriever

    node, emb, index, rows = scifact_pair
    out = []
    for backend in (node, emb):
        r = Retriever(backend, index, embedder)  # no extractor: never rewritten
        out.append((r.search(rows[5]["title"], k=5), r.search(rows[5]["title"], k=5,
                                                                 filter=dsl.terms("latent.research_field", ["genetics"]))))
    (pa, fa), (pb, fb) = out
    assert [h.doc_id for h in pa.hits] == [h.doc_id for h in pb.hits] and pa.hits[0].doc_id == str(rows[5]["_id"])
    assert [h.doc_id for h in fa.hits] == [h.doc_id for h in fb.hits]
    assert all("genetics" in h.latent["research_field"] for h in fa.hits)


def test_unmapped_field_matches_nothing_on_both(scifact_pair):
    """A term/terms clause on a field the mapping does not have matches nothing on OpenSearch (dynamic mapping
    applies on writes only), and now on the embedded engine too (it used to refuse the query)."""
    node, emb, index, _ = scifact_pair
    body = {"query": dsl.terms("metadata.research_field", ["genetics"])}
    assert node.search(index, copy.deepcopy(body))["hits"]["total"]["value"] == 0
    assert emb.search(index, copy.deepcopy(body))["hits"]["total"]["value"] == 0


# ------------------------------------------------------------------------ hybrid (neural-search)
@pytest.fixture
def neural(opensearch_node):
    if not opensearch_node.has_plugin("opensearch-neural-search"):
        pytest.skip("the neural-search plugin did not load on the node")


@pytest.mark.parametrize("fusion", ["min_max", "rrf"])
@pytest.mark.parametrize("collapse", [False, True])
def test_hybrid_query_with_search_pipeline(neural, filled, fusion, collapse):
    """`hybrid` (BM25 + k-NN with the filter inside) through a temporary search pipeline: normalization-processor
    (min_max, arithmetic_mean 0.3/0.7) or score-ranker-processor (rrf), as query.search/the rewriter send it."""
    from query.search import build_body

    backend, emb, index = filled
    body = build_body("cough", mode="hybrid", k=3, vector=[1.0, 3.0, 0.0, 0.5], collapse=collapse,
                      filter=dsl.terms("latent.disease", ["flu", "covid"]))
    if fusion == "rrf":
        body["search_pipeline"] = dsl.rrf_pipeline()
    node = backend.search(index, copy.deepcopy(body))
    local = emb.search(index, copy.deepcopy(body))
    assert ids(node) == ids(local)
    assert [h["_score"] for h in node["hits"]["hits"]] == pytest.approx([h["_score"] for h in local["hits"]["hits"]],
                                                                       abs=1e-4)


@pytest.mark.parametrize("fusion", ["rrf", "min_max"])
def test_rewriter_hybrid_runs_on_the_node(neural, scifact_pair, embedder, fusion):
    """The rewriter's hybrid mode (its _msearch ladder, then hybrid + search pipeline, boost promotion) on the
    node. Not compared hit by hit with the embedded engine (hybrid ties and sub-query depths differ);
    the level choice, which comes from the dense ladder, must agree."""
    from latentsearch.query.retrieval import Retriever

    node, emb, index, rows = scifact_pair
    out = []
    for backend in (node, emb):
        retriever = Retriever(backend, index, embedder, extractor=FixedExtractor(["oncology", "genetics"]))
        out.append(retriever.rewriter().search(rows[7]["title"], k=6, mode="hybrid", fusion=fusion, min_hits=3))
    a, b = out
    assert len(a.hits) == 6 and a.hits[0].doc_id == str(rows[7]["_id"])
    assert a.explanation.chosen_msm == b.explanation.chosen_msm
    assert a.hits[0].doc_id == b.hits[0].doc_id


def _pipeline(comb: str, weights: list[float]) -> dict:
    if comb == "rrf":
        return dsl.rrf_pipeline()
    return {"phase_results_processors": [{"normalization-processor": {
        "normalization": {"technique": "min_max"},
        "combination": {"technique": comb, "parameters": {"weights": weights}}}}]}


@pytest.mark.parametrize("comb", ["arithmetic_mean", "geometric_mean", "harmonic_mean", "rrf"])
@pytest.mark.parametrize("size", [5, 15])
def test_hybrid_combination_semantics(neural, scifact_pair, embedder, comb, size):
    """hybrid scores and hits.total, with sub-queries whose scores both engines compute identically (k-NN and
    constant_score). Found here and fixed in
    the embedded engine: (1) OpenSearch's arithmetic_mean counts a sub-query that missed a document as 0 *with*
    its weight (geometric/harmonic skip it); the embedded engine divided by the present weights only. (2)
    hits.total counts every document any sub-query matched, not only each sub-query's top from+size."""
    node, emb, index, rows = scifact_pair
    v1, v2 = (embedder.encode([rows[i]["title"]])[0].tolist() for i in (2, 9))
    queries = [dsl.knn("vector", v1, k=12), {"constant_score": {"filter": dsl.term("latent.research_field", "genetics")}},
               dsl.knn("vector", v2, k=4)]
    body = {"query": dsl.hybrid(queries), "size": size, "_source": False,
            "search_pipeline": _pipeline(comb, [0.5, 0.2, 0.3])}
    a = node.search(index, copy.deepcopy(body))
    b = emb.search(index, copy.deepcopy(body))
    assert a["hits"]["total"]["value"] == b["hits"]["total"]["value"]
    assert_same_ranking(a, b)


def assert_same_ranking(a: dict, b: dict, tol: float = 1e-4) -> None:
    """Same scores in the same order; documents with equal scores may come in any order (OpenSearch breaks
    hybrid ties by its own collector order), and a tie group cut by the page end may differ in members."""
    sa = [h["_score"] for h in a["hits"]["hits"]]
    sb = [h["_score"] for h in b["hits"]["hits"]]
    assert sa == pytest.approx(sb, abs=tol)
    last = sa[-1] if sa else None
    groups: dict[float, tuple[set, set]] = {}
    for ha, hb in zip(a["hits"]["hits"], b["hits"]["hits"]):
        key = round(ha["_score"] / tol)
        if last is not None and abs(ha["_score"] - last) <= tol:
            continue
        groups.setdefault(key, (set(), set()))
        groups[key][0].add(ha["_id"])
        groups[key][1].add(hb["_id"])
    for key, (ga, gb) in groups.items():
        assert ga == gb, f"score {key * tol}: OpenSearch {sorted(ga)} embedded {sorted(gb)}"


def test_bm25_matches_lucene(scifact_pair):
    """The default lexical query (`match` on `content`, english analysis, Lucene's BM25 with its one-byte length
    norms) ranks the node's top-10 identically on the embedded engine. Scores differ by the constant k1 + 1 = 2.2:
    OpenSearch 2.x scores with LegacyBM25Similarity (k1 + 1 in the numerator); 3.0 switched its default to Lucene's
    BM25Similarity (opensearch-project/OpenSearch#17315), which is what the embedded engine computes. Rank-based
    fusion (RRF, the default) and min-max normalisation are unaffected by a constant factor."""
    from latentsearch.query.search import lexical_query

    node, emb, index, rows = scifact_pair
    for i in (3, 7, 11, 19, 23):
        body = {"query": lexical_query(rows[i]["title"]), "size": 10}
        a, b = node.search(index, copy.deepcopy(body)), emb.search(index, copy.deepcopy(body))
        assert a["hits"]["total"] == b["hits"]["total"]
        for h in b["hits"]["hits"]:
            h["_score"] *= 2.2  # LegacyBM25Similarity's k1 + 1
        assert_same_ranking(a, b, tol=1e-4 * a["hits"]["hits"][0]["_score"])
        assert ids(a)[0] == f"{rows[i]['_id']}#0"  # the title's own abstract wins


# -------------------------------------------------------------- ML Commons: opensearch-setup, pipelines
@pytest.fixture
def ml_commons(opensearch_node):
    if not opensearch_node.has_plugin("opensearch-ml"):
        pytest.skip("the ML Commons plugin did not load on the node")


def test_opensearch_setup_ingest_and_search_pipelines(ml_commons, opensearch_node, os_index, home, embedder):
    """`latentsearch opensearch-setup --models embeddings` against real ML Commons, with the model server
    (latentsearch serve, MiniLM only) on loopback: connector, remote model, deployment, the ingest pipeline's
    ml_inference processor fills `vector` on write (equal to the embedder's own vector), and the search
    pipeline turns a plain `match` on `text` into k-NN."""
    pytest.importorskip("uvicorn")
    from typer.testing import CliRunner

    from latentsearch.cli import app
    from latentsearch.config import load_settings
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from tests.test_serve import LiveServer

    with LiveServer(create_app(ServeConfig(settings=load_settings()))) as server:
        result = CliRunner().invoke(app, ["opensearch-setup", "--url", opensearch_node.url, "--server-url", server.url,
                                          "--models", "embeddings", "--json"])
        assert result.exit_code == 0, result.output
        created = json.loads(result.stdout)
        assert created["ids"]["embeddings_model_id"] and created["ingest_pipeline"] == "latentsearch-ingest"

        body = index_body("opensearch", EntitySchema(), dimension=embedder.dimension)
        body["settings"]["index"]["default_pipeline"] = created["ingest_pipeline"]
        with backend_for(opensearch_node.url) as backend:
            backend.create_index(os_index, body)
            texts = ["Aspirin lowers the risk of heart attack.", "White matter develops in newborn brains.",
                     "Insulin regulates blood sugar."]
            actions = [BulkAction(id=f"d{i}#0", source={"doc_id": f"d{i}", "chunk": {"no": 0, "count": 1}, "text": t})
                       for i, t in enumerate(texts)]
            results = backend.bulk(os_index, actions, refresh=True)
            assert all(r.ok for r in results), results
            stored = backend.search(os_index, {"query": {"match_all": {}}, "_source": True, "size": 10})
            by_id = {h["_id"]: h["_source"] for h in stored["hits"]["hits"]}
            want = embedder.encode(texts)
            for i in range(len(texts)):
                got = np.asarray(by_id[f"d{i}#0"]["vector"])
                assert got.shape == (embedder.dimension,)
                assert float(np.dot(got, want[i]) / np.linalg.norm(got) / np.linalg.norm(want[i])) > 0.999
            found = backend.search(os_index, {"query": {"match": {"text": {"query": "brain development in babies"}}},
                                              "size": 1}, params={"search_pipeline": created["search_pipeline"]})
            # the query_template replaces the whole request body: `size` too (k = the setup's --k, 10)
            assert ids(found)[0] == "d1#0" and len(ids(found)) == 3


def test_opensearch_setup_extract_pipeline_enriches_latent_entities_on_the_node(ml_commons, opensearch_node,
                                                                                 os_index, home):
    """The cluster-side extraction path (issue 17): `opensearch-setup --models extract` registers a connector to the
    real model server's `/extract` (LentEx: SmolLM2 + the shipped LoRA, on loopback); documents bulk-written through
    the ingest pipeline get `latent.<type>` from its `ml_inference` processor, equal to what the server answers
    for each text and to what local ingest's latent processor extracts (a free type and a closed label set)."""
    pytest.importorskip("uvicorn")
    import httpx
    from typer.testing import CliRunner

    from latentsearch.cli import app
    from latentsearch.config import load_settings
    from latentsearch.ingest.processors import LatentEntityProcessor
    from latentsearch.models.factory import extractor_from_settings
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from tests.test_serve import LiveServer

    schema = EntitySchema(text_type="biomedical abstract", latent_types=[
        "disease", {"name": "study_type", "options": ["clinical trial", "laboratory study", "review"]}])
    texts = ["Aspirin lowers the risk of heart attack in adults with diabetes.",
             "Mice lacking the gene develop severe anemia."]
    settings = load_settings(entities=schema.model_dump())
    with LiveServer(create_app(ServeConfig(settings=settings))) as server:
        direct = httpx.post(f"{server.url}/extract", timeout=600, json={  # also loads the model before the cluster calls
            "texts": texts, "text_type": schema.text_type,
            "types": [t.model_dump(exclude_none=True) for t in schema.latent_types]}).json()["results"]
        result = CliRunner().invoke(app, ["opensearch-setup", "--url", opensearch_node.url, "--server-url", server.url,
                                          "--models", "extract", "--text-type", schema.text_type, "--json"],
                                    env={"LATENTSEARCH_ENTITIES__LATENT_TYPES": json.dumps(
                                        [t.model_dump(exclude_none=True) for t in schema.latent_types])})
        assert result.exit_code == 0, result.output
        created = json.loads(result.stdout)
        assert created["ids"]["extract_model_id"] and created["search_pipeline"] is None
        body = index_body("opensearch", schema, dimension=384)
        body["settings"]["index"]["default_pipeline"] = created["ingest_pipeline"]
        # the bulk waits for one LLM extraction per document: more than backend_for's 30 s on a busy CPU
        with open_backend(BackendConfig(kind="opensearch", url=opensearch_node.url, timeout_s=300,
                                        max_retries=0)) as backend:
            backend.create_index(os_index, body)
            actions = [BulkAction(id=f"d{i}#0", source={"doc_id": f"d{i}", "chunk": {"no": 0, "count": 1}, "text": t})
                       for i, t in enumerate(texts)]
            results = backend.bulk(os_index, actions, refresh=True)
            assert all(r.ok for r in results), results
            stored = {h["_id"]: h["_source"] for h in backend.search(
                os_index, {"query": {"match_all": {}}, "size": 10})["hits"]["hits"]}
    local = LatentEntityProcessor(extractor_from_settings(settings.models), schema).compute(texts)
    for i in range(len(texts)):
        latent = stored[f"d{i}#0"]["latent"]
        assert latent == direct[i]["latent"]  # the cluster stored exactly the server's answer
        assert {k: v for k, v in latent.items() if v} == {k: v for k, v in local[i].items() if v}  # = local ingest
        assert latent["study_type"][0] in {"clinical trial", "laboratory study", "review"}


# ------------------------------------------------------------------------------------ the CLI
def test_cli_ingest_search_info_delete_with_url(opensearch_node, home, os_index, scifact_sample):
    """`latentsearch ingest/search/info/delete-index --url` against the node, as the README shows them."""
    from typer.testing import CliRunner

    from latentsearch.cli import app

    corpus = home.parent / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(scifact_sample.read_bytes().splitlines()[:12]) + b"\n")
    url = opensearch_node.url
    runner = CliRunner()

    def cli(*args: str):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args else result.stdout

    report = cli("ingest", str(corpus), "--url", url, "--index", os_index, "--json", "--latent-types",
                 "disease,chemical", "--text-type", "biomedical abstract", "--no-latent", "--no-progress")
    assert report["records_read"] == 12 and report["rejected"] == 0 and report["backend"] == "opensearch"
    first = json.loads(corpus.read_text().splitlines()[0])
    for mode in ("dense", "bm25", "hybrid"):
        result = cli("search", first["title"], "--url", url, "--index", os_index, "--mode", mode, "--k", "3", "--json")
        assert result["hits"][0]["doc_id"] == first["_id"], mode
        assert len({h["doc_id"] for h in result["hits"]}) == len(result["hits"]) == 3  # collapsed
    info = cli("info", "--url", url, "--index", os_index, "--json")
    [idx] = [i for i in info["indices"] if i["name"] == os_index]
    assert idx["dimension"] == 384 and idx["chunks"] == report["chunks_written"]
    assert [t["name"] for t in idx["entities"]["latent_types"]] == ["disease", "chemical"]
    # a re-run resumes from the checkpoint and writes nothing twice
    again = cli("ingest", str(corpus), "--url", url, "--index", os_index, "--json", "--latent-types",
                "disease,chemical", "--text-type", "biomedical abstract", "--no-latent", "--no-progress")
    assert again["records_skipped_by_checkpoint"] == 12
    with backend_for(url) as backend:
        assert backend.count(os_index) == report["chunks_written"]
    cli("delete-index", os_index, "--url", url, "--yes")
    with backend_for(url) as backend:
        assert not backend.index_exists(os_index)


def test_cli_demo_on_the_node(opensearch_node, home, monkeypatch, scifact_sample):
    """`latentsearch demo` on the configured OpenSearch backend (LATENTSEARCH_BACKEND__URL), as CI runs it."""
    from typer.testing import CliRunner

    from latentsearch.cli import app

    monkeypatch.setenv("LATENTSEARCH_BACKEND__URL", opensearch_node.url)
    result = CliRunner().invoke(app, ["demo", "--limit", "20", "--queries", "1", "--k", "3", "--fresh",
                                      "--index", "scifact-demo-node", "--corpus", str(scifact_sample)])
    assert result.exit_code == 0, result.output
    assert "opensearch" in result.stdout and "20 abstracts read" in result.stdout and "0 rejected" in result.stdout
    assert "claim" in result.stdout
    with backend_for(opensearch_node.url) as backend:
        assert backend.count("scifact-demo-node") >= 20
        backend.delete_index("scifact-demo-node")


def test_hybrid_ignores_collapse_on_2_19(neural, backend, os_index, tmp_path):
    """DOCUMENTED DIFFERENCE, worked around in latentsearch: OpenSearch 2.19 silently ignores `collapse` on a
    `hybrid` query (chunks of one document come back side by side; collapse for hybrid arrived in a later
    release), while the embedded engine collapses. query.search.build_body asks hybrid searches for the k*3 pool
    and collapse_hits() keeps each document's best chunk, so search/Retriever/rewriter results agree."""
    from latentsearch.backends.embedded import EmbeddedBackend
    from query.search import build_body, collapse_hits, parse_hits

    docs = []
    for n in range(4):
        for c in range(2):
            src = doc(n, diseases=["flu"], text=f"cough chunk {c} of {n}")
            src["chunk"] = {"no": c, "count": 2}
            docs.append(BulkAction(id=f"d{n}#{c}", source=src))
    emb = EmbeddedBackend(tmp_path / "db")
    for b in (backend, emb):
        b.create_index(os_index, small_body())
        assert all(r.ok for r in b.bulk(os_index, copy.deepcopy(docs), refresh=True))
    body = build_body("cough chunk", mode="hybrid", k=3, vector=[1.0, 2.0, 0.0, 0.5])
    assert body["collapse"] == {"field": "doc_id"} and body["size"] == 9
    raw = backend.search(os_index, copy.deepcopy(body))
    node_docs = [h["_source"]["doc_id"] for h in raw["hits"]["hits"]]
    assert len(node_docs) > len(set(node_docs))  # the node did not collapse
    local = emb.search(os_index, copy.deepcopy(body))
    assert len({h["_source"]["doc_id"] for h in local["hits"]["hits"]}) == len(local["hits"]["hits"])  # embedded did
    a, b = collapse_hits(parse_hits(raw), 3), collapse_hits(parse_hits(local), 3)
    assert len(a) == len(b) == 3 and len({h.doc_id for h in a}) == 3
    emb.close()
