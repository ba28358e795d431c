"""Elasticsearch dialect and backend.

No Elasticsearch server can run here (no JVM). So: (1) `es_dialect` is tested as pure functions, the
radial-threshold conversion against brute-force numpy using OpenSearch's documented score/distance
formulas and ES's documented raw similarities; (2) the real elasticsearch-py client talks over
loopback HTTP to a small recording stand-in (`FakeElasticsearch`) so the requests that go over the
wire (method, path, translated body) and the OpenSearch-shaped responses are checked; every body the
client sends is validated against the official Elasticsearch OpenAPI document (the `server` fixture;
tests/test_elasticsearch_spec.py holds the validator's own checks and negative controls).
"""

from __future__ import annotations

import base64
import copy

import numpy as np
import pytest

from latentsearch import dsl
from latentsearch.backends import es_dialect, open_backend
from latentsearch.backends.base import BackendError, BulkAction, IndexNotFoundError, TransientBackendError
from latentsearch.backends.elasticsearch import ElasticsearchBackend, client_kwargs
from latentsearch.backends.es_dialect import DialectError, QueryTranslator, translate_search_body
from latentsearch.config import AuthConfig, BackendConfig, EntitySchema, TLSConfig, VectorIndexConfig
from latentsearch.mappings.builder import opensearch_index_body
from tests.oracles.http_fakes import (
    FakeElasticsearch,
    FaultInjectingProxy,
    LoopbackServer,
    always,
    fail_first,
)

INDEX = "docs"
VEC = [0.5, -0.25, 1.0, 0.0]


def os_body(space: str = "cosinesimil") -> dict:
    schema = EntitySchema(latent_types=["disease"])
    return opensearch_index_body(
        schema, dimension=4, mention_dimension=4, vector=VectorIndexConfig(space_type=space)
    )


# ---------------------------------------------------------------- dialect: queries


def test_knn_translation():
    q = dsl.knn(
        "vector", VEC, k=5, filter=dsl.bool_query(filter=[dsl.term("latent.disease", "flu")]), boost=2.0
    )
    assert QueryTranslator().query(q) == {
        "knn": {
            "field": "vector",
            "query_vector": VEC,
            "k": 5,
            "num_candidates": 8,
            "filter": [{"bool": {"filter": [{"term": {"latent.disease": {"value": "flu"}}}]}}],
            "boost": 2.0,
        }
    }
    tuned = QueryTranslator().query(dsl.knn("vector", VEC, k=5, ef_search=100))["knn"]
    assert tuned["num_candidates"] == 100 and tuned["k"] == 5 and "filter" not in tuned
    legacy = QueryTranslator(emit_k=False).query(dsl.knn("vector", VEC, k=5))["knn"]
    assert "k" not in legacy and legacy["num_candidates"] == 8


def test_nested_knn_and_knn_inside_compound_queries():
    mention = dsl.knn("mentions.vector", VEC, k=3, filter=dsl.terms("latent.disease", ["flu"]))
    q = dsl.bool_query(
        should=[dsl.nested("mentions", mention, score_mode="max"), dsl.match("text", "cough")],
        minimum_should_match=1,
    )
    out = QueryTranslator().query(q)
    nested = out["bool"]["should"][0]["nested"]
    assert nested["path"] == "mentions" and nested["score_mode"] == "max"
    assert nested["query"] == {
        "knn": {
            "field": "mentions.vector",
            "query_vector": VEC,
            "k": 3,
            "num_candidates": 5,
            "filter": [{"terms": {"latent.disease": ["flu"]}}],
        }
    }
    assert out["bool"]["should"][1] == dsl.match("text", "cough")
    assert out["bool"]["minimum_should_match"] == 1
    boxed = QueryTranslator().query({"constant_score": {"filter": dsl.knn("vector", VEC, k=2)}})
    assert boxed["constant_score"]["filter"]["knn"]["field"] == "vector"
    dm = QueryTranslator().query({"dis_max": {"queries": [dsl.knn("vector", VEC, k=2)], "tie_breaker": 0.3}})
    assert dm["dis_max"]["queries"][0]["knn"]["k"] == 2 and dm["dis_max"]["tie_breaker"] == 0.3


def test_non_vector_dsl_passes_through_unchanged():
    q = dsl.bool_query(
        must=[dsl.multi_match("fever", ["title", "text"], operator="and")],
        should=[dsl.term("latent.disease", "flu"), dsl.terms("latent.drug", ["x", "y"])],
        filter=[dsl.range_("chunk.no", gte=0, lt=5), dsl.exists("title"), dsl.ids(["1", "2"])],
        must_not=[dsl.match("text", "spam", minimum_should_match="75%")],
        minimum_should_match="3<90%",
    )
    original = copy.deepcopy(q)
    assert QueryTranslator().query(q) == original
    assert q == original  # the input is never mutated
    body, params = translate_search_body(
        dsl.search_body(q, size=7, from_=2, min_score=0.1, collapse_field="doc_id")
    )
    assert body == {**dsl.search_body(original, size=7, from_=2, min_score=0.1, collapse_field="doc_id")}
    assert params == {}


def test_knn_refusals_are_clear():
    with pytest.raises(DialectError, match="rescore"):
        QueryTranslator().query({"knn": {"vector": {"vector": VEC, "k": 3, "rescore": True}}})
    with pytest.raises(DialectError, match="exactly one vector field"):
        QueryTranslator().query({"knn": {"a": {"vector": VEC, "k": 1}, "b": {"vector": VEC, "k": 1}}})
    with pytest.raises(DialectError, match="10000"):
        QueryTranslator().query(dsl.knn("vector", VEC, k=20_000))
    with pytest.raises(DialectError, match="similarity"):
        QueryTranslator().query(dsl.knn("vector", VEC, k=None, min_score=0.8))  # mapping unknown
    with pytest.raises(DialectError, match="top-level"):
        QueryTranslator().query(dsl.bool_query(must=[dsl.hybrid([dsl.match_all()])]))


# ---------------------------------------------------------------- dialect: radial thresholds


def _os_score(space: str, q: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """OpenSearch's documented scores (k-NN spaces page): what `min_score` is compared with."""
    if space == "cosinesimil":
        cos = docs @ q / (np.linalg.norm(docs, axis=1) * np.linalg.norm(q))
        return (1 + cos) / 2
    if space == "l2":
        return 1 / (1 + ((docs - q) ** 2).sum(axis=1))
    ip = docs @ q
    return np.where(ip >= 0, ip + 1, 1 / (1 - ip))


def _os_distance(space: str, q: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """OpenSearch's documented distances: what `max_distance` is compared with (l2 is squared)."""
    if space == "cosinesimil":
        return 1 - docs @ q / (np.linalg.norm(docs, axis=1) * np.linalg.norm(q))
    if space == "l2":
        return ((docs - q) ** 2).sum(axis=1)
    return -(docs @ q)


def _es_passes(sim: str, q: np.ndarray, docs: np.ndarray, threshold: float | None) -> np.ndarray:
    """ES's documented `similarity` semantics: l2_norm is a Euclidean radius, the others a floor."""
    if threshold is None:
        return np.ones(len(docs), dtype=bool)
    if sim == "l2_norm":
        return np.sqrt(((docs - q) ** 2).sum(axis=1)) <= threshold
    if sim == "cosine":
        return docs @ q / (np.linalg.norm(docs, axis=1) * np.linalg.norm(q)) >= threshold
    return docs @ q >= threshold


@pytest.mark.parametrize("space", ["cosinesimil", "l2", "innerproduct"])
def test_radial_thresholds_select_the_same_vectors(space):
    rng = np.random.default_rng(7)
    docs = rng.normal(size=(400, 8)) * 0.6
    q = rng.normal(size=8) * 0.6
    sim = es_dialect.OS_TO_ES_SIMILARITY[space]
    scores, dists = _os_score(space, q, docs), _os_distance(space, q, docs)
    # Thresholds at score/distance quantiles, nudged off the data so float rounding cannot flip a tie.
    for quantile in (0.1, 0.35, 0.5, 0.8, 0.97):
        s = float(np.quantile(scores, quantile)) + 1e-9
        d = float(np.quantile(dists, quantile)) + 1e-9
        via_score = _es_passes(sim, q, docs, es_dialect.radial_similarity(sim, min_score=s))
        via_dist = _es_passes(sim, q, docs, es_dialect.radial_similarity(sim, max_distance=d))
        np.testing.assert_array_equal(via_score, scores >= s)
        np.testing.assert_array_equal(via_dist, dists <= d)
        assert 0 < via_score.sum() < len(docs)


def test_radial_edge_cases():
    assert es_dialect.radial_similarity("cosine", min_score=0.0) is None  # excludes nothing
    assert es_dialect.radial_similarity("cosine", max_distance=2.5) is None
    assert es_dialect.radial_similarity("max_inner_product", min_score=0.5) == pytest.approx(-1.0)
    assert es_dialect.radial_similarity("max_inner_product", min_score=1.5) == pytest.approx(0.5)
    assert es_dialect.radial_similarity("l2_norm", max_distance=4.0) == pytest.approx(2.0)
    assert es_dialect.radial_similarity("dot_product", min_score=0.75) == pytest.approx(0.5)
    for sim in ("cosine", "l2_norm"):
        with pytest.raises(DialectError, match="can never match"):
            es_dialect.radial_similarity(sim, min_score=1.5)
        with pytest.raises(DialectError, match="can never match"):
            es_dialect.radial_similarity(sim, max_distance=-0.1)


def test_radial_knn_query():
    translator = QueryTranslator(similarity_of={"vector": "l2_norm"}, radial_candidates=500)
    out = translator.query(dsl.knn("vector", VEC, k=None, max_distance=0.25))["knn"]
    assert out["similarity"] == pytest.approx(0.5)
    assert out["k"] == out["num_candidates"] == 500
    out = translator.query(dsl.knn("vector", VEC, k=None, min_score=0.5))["knn"]
    assert out["similarity"] == pytest.approx(1.0)  # 1/(1+d²) ≥ 0.5  ⇔  d ≤ 1


# ---------------------------------------------------------------- dialect: hybrid, bodies, responses


def test_hybrid_becomes_rrf_retriever():
    text = dsl.match("text", "cough")
    vec = dsl.knn("vector", VEC, k=10)
    body = dsl.search_body(dsl.hybrid([text, vec]), size=5, search_pipeline=dsl.rrf_pipeline())
    out, params = translate_search_body(body, hybrid="linear")  # the body's RRF pipeline wins
    assert "query" not in out and "search_pipeline" not in out and params == {}
    assert out["size"] == 5 and out["_source"] == body["_source"]
    assert out["retriever"] == {
        "rrf": {
            "retrievers": [
                {"standard": {"query": text}},
                {"standard": {"query": QueryTranslator().query(vec)}},
            ],
            "rank_window_size": 10,
            "rank_constant": 60,
        }
    }
    # An inline min-max pipeline asks for weighted fusion: the linear retriever, whatever the default mode
    # (issue 15: `--fusion` is honoured on every backend).
    minmax = dsl.search_body(dsl.hybrid([text, vec]), size=5, search_pipeline=dsl.normalization_pipeline())
    assert "linear" in translate_search_body(minmax, hybrid="rrf")[0]["retriever"]
    # A named pipeline (OpenSearch query param) is consumed too: the client's mode (RRF) decides.
    out, params = translate_search_body(
        {"query": dsl.hybrid([text]), "size": 30}, params={"search_pipeline": "p"}
    )
    assert params == {} and out["retriever"]["rrf"]["rank_window_size"] == 30


def test_hybrid_linear_keeps_weights_and_normalisation():
    body = dsl.search_body(
        dsl.hybrid([dsl.match("text", "cough"), dsl.knn("vector", VEC, k=10)]),
        search_pipeline=dsl.normalization_pipeline("min_max", "arithmetic_mean", weights=[0.3, 0.7]),
    )
    out, _ = translate_search_body(body, hybrid="linear")
    linear = out["retriever"]["linear"]
    assert [(r["weight"], r["normalizer"]) for r in linear["retrievers"]] == [
        (0.3, "minmax"),
        (0.7, "minmax"),
    ]
    assert linear["retrievers"][1]["retriever"]["standard"]["query"]["knn"]["field"] == "vector"
    l2 = translate_search_body(
        dsl.search_body(dsl.hybrid([dsl.match_all()]), search_pipeline=dsl.normalization_pipeline("l2")),
        hybrid="linear",
    )[0]
    assert l2["retriever"]["linear"]["retrievers"][0]["normalizer"] == "l2_norm"
    with pytest.raises(DialectError, match="geometric_mean"):
        translate_search_body(
            dsl.search_body(
                dsl.hybrid([dsl.match_all()]),
                search_pipeline=dsl.normalization_pipeline(combination="geometric_mean"),
            ),
            hybrid="linear",
        )
    with pytest.raises(DialectError, match="inline"):
        translate_search_body(
            {"query": dsl.hybrid([dsl.match_all()])}, params={"search_pipeline": "named"}, hybrid="linear"
        )


def test_search_pipeline_without_hybrid_and_min_score_with_hybrid_are_refused():
    with pytest.raises(DialectError, match="no search pipelines"):
        translate_search_body(dsl.search_body(dsl.match_all(), search_pipeline=dsl.normalization_pipeline()))
    with pytest.raises(DialectError, match="no search pipelines"):
        translate_search_body({"query": dsl.match_all()}, params={"search_pipeline": "p"})
    with pytest.raises(DialectError, match="min_score"):
        translate_search_body(dsl.search_body(dsl.hybrid([dsl.match_all()]), min_score=0.2))


def test_response_translation():
    es = {
        "took": 3,
        "timed_out": False,
        "hits": {
            "total": 7,
            "max_score": 1.5,
            "hits": [{"_id": "a", "_score": 1.5, "_rank": 1, "_source": {}}],
        },
    }
    out = es_dialect.translate_search_response(es)
    assert out["hits"]["total"] == {"value": 7, "relation": "eq"}
    assert out["hits"]["hits"] == [{"_id": "a", "_score": 1.5, "_source": {}}]
    already = {
        "took": 1,
        "timed_out": False,
        "hits": {"total": {"value": 10000, "relation": "gte"}, "max_score": None, "hits": []},
    }
    assert es_dialect.translate_search_response(already) == already


# ---------------------------------------------------------------- dialect: mappings


@pytest.mark.parametrize(
    "space,sim", [("cosinesimil", "cosine"), ("l2", "l2_norm"), ("innerproduct", "max_inner_product")]
)
def test_mapping_round_trip(space, sim):
    body = os_body(space)
    es = es_dialect.create_index_body(body)
    assert "knn" not in es["settings"]["index"]
    props = es["mappings"]["properties"]
    assert props["vector"] == {
        "type": "dense_vector",
        "dims": 4,
        "index": True,
        "similarity": sim,
        "index_options": {"type": "hnsw", "m": 16, "ef_construction": 128},
    }
    assert props["mentions"]["properties"]["vector"]["type"] == "dense_vector"
    assert es_dialect.vector_similarities(es["mappings"]) == {"vector": sim, "mentions.vector": sim}
    assert (
        es_dialect.from_elasticsearch_mappings(es["mappings"]) == body["mappings"]
    )  # lossless for lucene/hnsw
    assert body["settings"]["index"]["knn"] is True  # input untouched
    assert es_dialect.create_index_body({"settings": {"index": {"knn": True, "number_of_shards": 2}}}) == {
        "settings": {"index": {"number_of_shards": 2}}
    }


# ---------------------------------------------------------------- the real client over loopback HTTP


@pytest.fixture
def fake():
    return FakeElasticsearch()


@pytest.fixture
def server(fake):
    """The stand-in on loopback; afterwards every request body the client sent must validate against
    the official Elasticsearch OpenAPI document (tests/oracles/elasticsearch_spec.py)."""
    from tests.oracles.elasticsearch_spec import load_es_validator, validate_wire_request

    with LoopbackServer(fake) as srv:
        yield srv
    spec = load_es_validator()
    checked = [(r.method, r.path, validate_wire_request(spec, r.method, r.path, r.body)) for r in srv.requests]
    bad = [(m, p, errors[:2]) for m, p, errors in checked if errors]
    assert not bad, f"requests Elasticsearch's spec rejects: {bad}"


def es_backend(url: str, **overrides: object) -> ElasticsearchBackend:
    backend = open_backend(
        BackendConfig(kind="elasticsearch", url=url, **{"timeout_s": 5.0, "max_retries": 2, **overrides})
    )
    assert isinstance(backend, ElasticsearchBackend)
    return backend


def test_index_lifecycle_on_the_wire(server, fake):
    with es_backend(server.url) as b:
        assert b.index_exists(INDEX) is False
        assert b.create_index(INDEX, os_body()) is True
        assert b.create_index(INDEX, os_body(), exist_ok=True) is False
        with pytest.raises(BackendError, match="already exists"):
            b.create_index(INDEX, os_body())
        mapping = b.get_mapping(INDEX)
        assert b.list_indices() == [INDEX]
        assert b.delete_index(INDEX) is True
        assert b.delete_index(INDEX) is False
        with pytest.raises(IndexNotFoundError):
            b.delete_index(INDEX, missing_ok=False)
    create = server.recorded("PUT", f"/{INDEX}")[0]
    sent = create.json()
    assert sent == es_dialect.create_index_body(os_body())  # settings without knn, dense_vector mappings
    assert sent["mappings"]["properties"]["vector"]["type"] == "dense_vector"
    assert "compatible-with=" in create.headers["content-type"]  # elasticsearch-py's own headers
    assert mapping == os_body()["mappings"]  # read back OpenSearch-shaped
    cat = server.recorded("GET", "/_cat/indices")[0]
    assert cat.query == {"format": "json", "h": "index"}
    assert [r.method for r in server.recorded(path_suffix=f"/{INDEX}")] == [
        "HEAD",
        "PUT",
        "HEAD",
        "PUT",
        "DELETE",
        "DELETE",
        "DELETE",
    ]


def test_bulk_search_msearch_count_get_on_the_wire(server, fake):
    with es_backend(server.url) as b:
        b.create_index(INDEX, os_body())
        actions = [
            BulkAction(id="1", source={"text": "fever", "latent": {"disease": ["flu"]}, "vector": VEC}),
            BulkAction(id="2", source={"text": "bad doc", "bad": True}),
            BulkAction(id="3", source={"text": "thirst", "latent": {"disease": ["diabetes"]}, "vector": VEC}),
            BulkAction(id="9", op="delete"),
        ]
        results = b.bulk(INDEX, actions, refresh=True)
        again = b.bulk(INDEX, [BulkAction(id="1", source={"text": "fever v2"})])

        query = dsl.bool_query(
            must=[dsl.nested("mentions", dsl.knn("mentions.vector", VEC, k=4))],
            filter=[dsl.term("latent.disease", "flu")],
        )
        response = b.search(INDEX, dsl.search_body(query, size=3, from_=1), params={"request_cache": False})
        responses = b.msearch(
            INDEX, [dsl.search_body(dsl.knn("vector", VEC, k=2)), dsl.search_body(dsl.match_all())]
        )
        assert b.count(INDEX) == 2
        # the stand-in runs the query: "1" lost its latent values when `again` overwrote it
        assert b.count(INDEX, dsl.term("latent.disease", "flu")) == 0
        assert b.count(INDEX, dsl.term("latent.disease", "diabetes")) == 1
        assert b.get(INDEX, "1") == {"text": "fever v2"}
        assert b.get(INDEX, "nope") is None
        b.refresh(INDEX)
        with pytest.raises(IndexNotFoundError):
            b.get("missing", "1")
        with pytest.raises(IndexNotFoundError):
            b.search("missing", {"query": dsl.match_all()})

    assert [(r.id, r.status, r.ok) for r in results] == [
        ("1", 201, True),
        ("2", 400, False),
        ("3", 201, True),
        ("9", 404, True),
    ]
    assert results[1].error_type == "document_parsing_exception" and "bad" in results[1].error
    assert again[0].status == 200

    bulk = server.recorded("PUT", f"/{INDEX}/_bulk")[0]
    assert bulk.query == {"refresh": "true"}
    assert bulk.ndjson()[:2] == [{"index": {"_id": "1"}}, actions[0].source]
    assert bulk.ndjson()[-1] == {"delete": {"_id": "9"}}
    assert "x-ndjson" in bulk.headers["content-type"]
    assert "refresh" not in server.recorded("PUT", f"/{INDEX}/_bulk")[1].query

    search = server.recorded("POST", f"/{INDEX}/_search")[0]
    assert search.query == {"request_cache": "false"}
    sent = search.json()
    assert (
        sent["size"] == 3
        and sent["from"] == 1
        and sent["_source"] == {"excludes": ["vector", "mentions.vector"]}
    )
    assert sent["query"]["bool"]["must"][0]["nested"]["query"] == {
        "knn": {"field": "mentions.vector", "query_vector": VEC, "k": 4, "num_candidates": 6}
    }
    assert sent["query"]["bool"]["filter"] == [{"term": {"latent.disease": {"value": "flu"}}}]
    assert response["hits"]["total"] == {"value": 0, "relation": "eq"}  # no document has mentions
    assert response["hits"]["hits"] == []

    msearch = server.recorded("POST", f"/{INDEX}/_msearch")[0]
    lines = msearch.ndjson()
    assert lines[0] == {} and lines[2] == {}
    assert lines[1]["query"] == {"knn": {"field": "vector", "query_vector": VEC, "k": 2, "num_candidates": 3}}
    assert lines[3]["query"] == {"match_all": {}}
    # k-NN finds the one document that still has a vector ("1" was overwritten without one)
    assert [r["hits"]["total"]["value"] for r in responses] == [1, 2]
    assert [h["_id"] for h in responses[0]["hits"]["hits"]] == ["3"]

    count = server.recorded("POST", f"/{INDEX}/_count")
    assert count[0].body == b"" or count[0].json() in (None, {})
    assert count[1].json() == {"query": {"term": {"latent.disease": {"value": "flu"}}}}
    assert server.recorded("GET", f"/{INDEX}/_doc/1") and server.recorded("POST", f"/{INDEX}/_refresh")


def test_radial_knn_reads_mapping_once_then_sends_similarity(server, fake):
    with es_backend(server.url) as b:
        b.create_index(INDEX, os_body("l2"))
        body = dsl.search_body(dsl.knn("vector", VEC, k=None, max_distance=0.25))
        b.search(INDEX, body)
        b.search(INDEX, body)
    assert len(server.recorded("GET", f"/{INDEX}/_mapping")) == 1  # cached
    knn = server.recorded("POST", f"/{INDEX}/_search")[0].json()["query"]["knn"]
    assert knn["similarity"] == pytest.approx(0.5) and knn["num_candidates"] == 1000


def test_hybrid_search_and_total_as_int(server, fake):
    fake.total_as_int = True
    with es_backend(server.url) as b:
        b.create_index(INDEX, os_body())
        b.bulk(INDEX, [BulkAction(id="a", source={"text": "x"}), BulkAction(id="b", source={"text": "y"})])
        body = dsl.search_body(
            dsl.hybrid([dsl.match("text", "x"), dsl.knn("vector", VEC, k=5)]),
            size=2,
            search_pipeline=dsl.rrf_pipeline(),
        )
        response = b.search(INDEX, body)
    sent = server.recorded("POST", f"/{INDEX}/_search")[0].json()
    assert "query" not in sent and "search_pipeline" not in sent
    assert [r["standard"]["query"] for r in sent["retriever"]["rrf"]["retrievers"]][1]["knn"][
        "query_vector"
    ] == VEC
    assert response["hits"]["total"] == {"value": 1, "relation": "eq"}  # only "a" matches text x; no vectors
    assert [h["_id"] for h in response["hits"]["hits"]] == ["a"]
    assert all("_rank" not in h for h in response["hits"]["hits"])


def test_msearch_body_error_raises_with_reason(server, fake):
    def failing(req):
        if req.path.endswith("/_msearch"):
            err = {"type": "parsing_exception", "reason": "unknown query [bogus]"}
            ok = {
                "took": 1,
                "timed_out": False,
                "hits": {"total": {"value": 0, "relation": "eq"}, "max_score": None, "hits": []},
                "status": 200,
            }
            return (
                200,
                {"X-Elastic-Product": "Elasticsearch"},
                {"took": 1, "responses": [ok, {"error": {**err, "root_cause": [err]}, "status": 400}]},
            )
        return fake(req)

    with LoopbackServer(failing) as srv, es_backend(srv.url) as b:
        b.create_index(INDEX, os_body())
        with pytest.raises(BackendError, match="unknown query") as err:
            b.msearch(INDEX, [{"query": dsl.match_all()}, {"query": {"bogus": {}}}])
    assert err.value.status == 400 and "msearch body #1" in str(err.value)


def test_auth_headers_on_the_wire(server):
    with es_backend(server.url, auth=AuthConfig(kind="basic", username="elastic", password="changeme")) as b:
        b.index_exists(INDEX)
    with es_backend(
        server.url,
        auth=AuthConfig(
            kind="api_key", api_key="VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
        ),
    ) as b:
        b.index_exists(INDEX)
    basic, key = server.recorded("HEAD")
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(b"elastic:changeme").decode()
    assert (
        key.headers["authorization"] == "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    )


def test_client_options(tmp_path):
    config = BackendConfig(
        kind="elasticsearch",
        url="https://es.example:9200",
        timeout_s=9,
        max_retries=5,
        tls=TLSConfig(verify=True, ca_certs=tmp_path / "http_ca.crt"),
    )
    kwargs = client_kwargs(config)
    assert (
        kwargs["request_timeout"] == 9 and kwargs["max_retries"] == 5 and kwargs["retry_on_timeout"] is True
    )
    assert set(kwargs["retry_on_status"]) == {429, 502, 503, 504}
    assert kwargs["verify_certs"] is True and kwargs["ca_certs"].endswith("http_ca.crt")
    with pytest.raises(ValueError, match="kind=opensearch"):
        client_kwargs(
            config.model_copy(update={"auth": AuthConfig(kind="aws_sigv4", aws_region="us-east-1")})
        )


def test_retries_and_transient_errors(fake):
    with (
        LoopbackServer(fake) as upstream,
        FaultInjectingProxy(upstream.url, fail_first(2, 429, path_suffix="/_search")) as proxy,
    ):
        with es_backend(proxy.url, max_retries=2) as b:
            b.create_index(INDEX, os_body())
            assert b.search(INDEX, {"query": dsl.match_all()})["hits"]["total"]["value"] == 0
        assert len(proxy.recorded(path_suffix="/_search")) == 3
        with (
            FaultInjectingProxy(upstream.url, always(503, path_suffix="/_bulk")) as proxy,
            es_backend(proxy.url, max_retries=1) as b,
        ):
            with pytest.raises(TransientBackendError) as err:
                b.bulk(INDEX, [BulkAction(id="1", source={"a": 1})])
            assert err.value.status == 503
            assert len(proxy.recorded(path_suffix="/_bulk")) == 2


def test_not_elasticsearch_is_reported(fake):
    fake.headers = {}  # no X-Elastic-Product on a 2xx answer: the client's product check refuses it
    fake.indices[INDEX] = {"mappings": {}, "settings": {}}
    fake.engine.create_index(INDEX, {"mappings": {}})
    with (
        LoopbackServer(fake) as srv,
        es_backend(srv.url) as b,
        pytest.raises(BackendError, match="not Elasticsearch"),
    ):
        b.search(INDEX, {"query": dsl.match_all()})
