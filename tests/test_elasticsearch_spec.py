"""Elasticsearch request bodies against the official Elasticsearch OpenAPI document (vendored subset,
tests/vendor/elasticsearch-api-spec/; validator in tests/oracles/elasticsearch_spec.py).

What the backend sends (index creation with dense_vector mappings, bulk lines, searches with `knn`,
nested k-NN, radial `similarity`, hybrid as `rrf`/`linear` retrievers, msearch lines) must validate;
every request the real elasticsearch-py client puts on the wire in test_elasticsearch_backend.py is
checked there too (an autouse fixture). Negative controls prove the validator rejects what
Elasticsearch rejects (a misspelled clause, OpenSearch-only syntax, unknown keys), so "valid" means
something; the spec's own examples validate, except the shortcut forms the generator cannot express.
"""

from __future__ import annotations

import json
import re

import pytest

from latentsearch import dsl
from latentsearch.backends import es_dialect
from latentsearch.backends.base import BulkAction
from latentsearch.backends.cluster import bulk_operations
from latentsearch.backends.es_dialect import QueryTranslator, translate_search_body
from latentsearch.config import EntitySchema, VectorIndexConfig
from latentsearch.mappings.builder import opensearch_index_body
from latentsearch.query.rewriter import EntityMapping, latent_filter
from latentsearch.query.search import build_body
from tests.oracles.elasticsearch_spec import ES_URI, load_es_validator

VEC = [0.5, -0.25, 1.0, 0.0]


@pytest.fixture(scope="module")
def v():
    return load_es_validator()


def _os_index(space: str, **kw) -> dict:
    schema = EntitySchema(latent_types=["disease", "drug"])
    return opensearch_index_body(schema, dimension=4, vector=VectorIndexConfig(space_type=space),
                                 **{"mention_dimension": 4, **kw})


# ------------------------------------------------------------------------------ the validator itself


def _examples(v) -> list[tuple[str, str, object]]:
    doc = v.docs[ES_URI]
    out = []
    for item in doc["paths"].values():
        for op in item.values():
            body = op["requestBody"]
            if "$ref" in body:
                body = doc["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[1]]
            for name, ex in (body["content"]["application/json"].get("examples") or {}).items():
                try:
                    value = json.loads(ex["value"]) if isinstance(ex.get("value"), str) else ex.get("value")
                except json.JSONDecodeError:
                    continue  # NDJSON examples (bulk, msearch)
                out.append((re.sub(r"-\d+$", "", op["operationId"]).replace("-", "."), name, value))
    return out


# the generated OpenAPI cannot express ES's shortcut forms, e.g. {"term": {"f": "v"}} for {"term": {"f": {"value": "v"}}}
SHORTCUT_FORMS = {"indicesCreateRequestExample6", "CountRequestExample1", "SearchRequestExample1",
                  "SearchRequestExample2", "SearchRequestExample3"}


def test_the_specs_own_examples_validate_except_shortcut_forms(v) -> None:
    results = {name: v.validate_request_body(op, body) for op, name, body in _examples(v)}
    assert len(results) >= 8
    failing = {name for name, errors in results.items() if errors}
    assert failing == SHORTCUT_FORMS, {n: results[n][:1] for n in failing ^ SHORTCUT_FORMS}
    assert all("is not of type 'object'" in results[n][0] for n in SHORTCUT_FORMS)


@pytest.mark.parametrize(("op", "body", "why"), [
    ("search", {"query": {"terrm": {"f": {"value": 1}}}}, "'terrm' was unexpected"),
    ("search", {"query": {"knn": {"field": "vector", "vector": VEC}}}, "'vector' was unexpected"),  # OpenSearch style
    ("search", {"query": {"knn": {"vector": {"vector": VEC, "k": 3}}}}, "unexpected"),  # OpenSearch knn shape
    ("search", {"knn": {"field": "vector", "query_vector": VEC, "k": "three"}}, "'three'"),
    ("search", {"retriever": {"rrf": {"retrievers": [], "rank_constan": 60}}}, "'rank_constan' was unexpected"),
    ("search", {"query": {"match_all": {}}, "search_pipeline": "p"}, "'search_pipeline' was unexpected"),
    ("search", {"query": {"hybrid": {"queries": [{"match_all": {}}]}}}, "'hybrid' was unexpected"),
    ("search", {"query": {"terms": {"f": "not-a-list"}}}, "not of type 'array'"),
    ("indices.create", {"mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 4}}}}, "knn_vector"),
    ("indices.create", {"mappings": {"properties": {"v": {"type": "dense_vector", "dimension": 4}}}},
     "'dimension' was unexpected"),
    ("indices.create", {"settings": {"index": {"knn": True}}}, "'knn' was unexpected"),
    ("indices.create", {"mapping": {}}, "'mapping' was unexpected"),
])
def test_negative_controls(v, op: str, body: dict, why: str) -> None:
    errors = v.validate_request_body(op, body)
    assert errors and any(why in e for e in errors), errors


def test_bulk_and_msearch_negative_controls(v) -> None:
    assert any("'indx' was unexpected" in e for e in v.validate_bulk([{"indx": {"_id": "1"}}, {"a": 1}]))
    assert any("needs a document line" in e for e in v.validate_bulk([{"index": {"_id": "1"}}]))
    assert any("'k' was unexpected" in e for e in v.validate_bulk([{"delete": {"_id": "1", "k": 2}}]))
    assert any("header/body pairs" in e for e in v.validate_msearch([{}]))
    assert v.validate_msearch([{}, {"query": {"bogus": {}}}])


# ------------------------------------------------------------------------------ what the backend sends


@pytest.mark.parametrize("space", ["cosinesimil", "l2", "innerproduct"])
def test_index_creation_bodies(v, space: str) -> None:
    body = es_dialect.create_index_body(_os_index(space))
    assert v.validate_request_body("indices.create", body) == []
    assert v.validate_request_body("indices.put.mapping", body["mappings"]) == []
    assert body["mappings"]["properties"]["vector"]["type"] == "dense_vector"


QUERIES = {
    "knn": dsl.knn("vector", VEC, k=5),
    "knn+filter+boost": dsl.knn("vector", VEC, k=5, filter=dsl.bool_query(filter=[dsl.term("latent.disease", "flu")]),
                                boost=2.0),
    "knn ef_search": dsl.knn("vector", VEC, k=5, ef_search=100),
    "nested knn": dsl.nested("mentions", dsl.knn("mentions.vector", VEC, k=3, filter=dsl.terms("latent.disease", ["flu"])),
                             score_mode="max"),
    "bool with knn": dsl.bool_query(should=[dsl.nested("mentions", dsl.knn("mentions.vector", VEC, k=3)),
                                            dsl.match("text", "cough")], minimum_should_match=1),
    "latent ladder level": dsl.knn("vector", VEC, k=20, filter=latent_filter(
        [EntityMapping(type="disease", extracted="flu", values=["flu", "influenza"]),
         EntityMapping(type="drug", extracted="aspirin", values=["aspirin"])], 2, dsl.term("doc_id", "d1"))),
    "match_all": dsl.match_all(),
    "range+exists+ids": dsl.bool_query(filter=[dsl.range_("chunk.no", gte=0, lt=3), dsl.exists("title"),
                                               dsl.ids(["a", "b"])]),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_translated_search_bodies(v, name: str) -> None:
    body, _ = translate_search_body(dsl.search_body(QUERIES[name], size=7, from_=2, collapse_field="doc_id"))
    assert v.validate_request_body("search", body) == []
    assert v.validate_query(QueryTranslator().query(QUERIES[name])) == []


def test_radial_knn_body(v) -> None:
    q = QueryTranslator(similarity_of={"vector": "l2_norm"}).query(dsl.knn("vector", VEC, k=None, max_distance=0.25))
    assert "similarity" in q["knn"] and v.validate_query(q) == []


@pytest.mark.parametrize(("pipeline", "retriever"), [
    (dsl.normalization_pipeline("min_max", "arithmetic_mean", [0.3, 0.7]), "linear"),
    (dsl.normalization_pipeline("l2", "arithmetic_mean", [0.3, 0.7]), "linear"),
    (dsl.rrf_pipeline(), "rrf"),
])
@pytest.mark.parametrize("hybrid", ["rrf", "linear"])
def test_hybrid_retriever_bodies(v, pipeline: dict, retriever: str, hybrid: str) -> None:
    """The body's pipeline decides the retriever (min-max/l2 + weights: linear; rrf: rrf), whatever the
    client's default `hybrid` mode; every form validates against the Elasticsearch spec."""
    body = dsl.search_body(dsl.hybrid([dsl.match("text", "cough"), dsl.knn("vector", VEC, k=10)]), size=5,
                           search_pipeline=pipeline)
    out, _ = translate_search_body(body, hybrid=hybrid)
    assert retriever in out["retriever"] and v.validate_request_body("search", out) == []


def test_the_product_search_bodies(v) -> None:
    """build_body (dense and hybrid), as the rewriter and search send them."""
    for mode in ("dense", "hybrid"):
        body = build_body("which drugs lower blood pressure", mode=mode, k=10, vector=VEC,
                          filter={"terms": {"latent.drug": ["aspirin"]}})
        if mode == "hybrid":
            body["search_pipeline"] = dsl.rrf_pipeline()
        out, _ = translate_search_body(body)
        assert v.validate_request_body("search", out) == [], mode


def test_bulk_and_msearch_bodies(v) -> None:
    lines = bulk_operations([BulkAction("1", {"text": "a", "vector": VEC}), BulkAction("2", {"text": "b"}, op="create"),
                             BulkAction("3", op="delete")])
    assert v.validate_bulk(lines) == []
    searches = [translate_search_body(dsl.search_body(q))[0] for q in (QUERIES["knn"], QUERIES["match_all"])]
    assert v.validate_msearch([x for s in searches for x in ({}, s)]) == []


def test_the_wire_check_rejects_what_elasticsearch_would(v) -> None:
    """The check the backend tests run on every recorded request, on bodies it must refuse."""
    from tests.oracles.elasticsearch_spec import validate_wire_request

    good = json.dumps({"query": {"match_all": {}}}).encode()
    assert validate_wire_request(v, "POST", "/docs/_search", good) == []
    assert validate_wire_request(v, "POST", "/docs/_search", b'{"query": {"knn": {"vector": {"vector": [1], "k": 1}}}}')
    assert validate_wire_request(v, "PUT", "/docs", b'{"settings": {"index": {"knn": true}}}')
    assert validate_wire_request(v, "PUT", "/docs/_bulk", b'{"index": {"_id": "1"}}\n')
    assert validate_wire_request(v, "POST", "/docs/_msearch", b'{}\n{"query": {"hybrid": {}}}\n')
    assert "no request-body schema" in validate_wire_request(v, "POST", "/docs/_update_by_query", good)[0]
    assert validate_wire_request(v, "HEAD", "/docs", b"") == []
