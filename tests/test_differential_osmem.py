"""Differential tests of the embedded engine against osmem-server (oracle 3).

osmem-server is an independent, in-memory OpenSearch-compatible server (Go). The same documents
and the same queries go to osmem (through plain opensearch-py, never through latentsearch code) and
to the embedded engine; the hit id *sets* and the counts must agree. Scores and ranking are not
compared: the embedded engine need not reproduce Lucene's BM25.

1. `test_osmem_*_hand_case`: osmem is first checked against answers worked out by hand
   (tests/oracles/hand_cases.py), so a disagreement later can be blamed on the engine.
2. `test_embedded_*_hand_case`: the same hand answers, on the embedded engine.
3. `test_same_hits` / `test_same_count`: ~240 cases (hand-written edge cases + generated bool
   trees from tests/oracles/dsl_generator.py), each its own test id showing the query.
4. `test_unsupported_clause_is_refused`: clauses outside the embedded subset raise
   UnsupportedQueryError naming the clause.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

opensearchpy = pytest.importorskip("opensearchpy")
pytest.importorskip("osmem_server")

from tests.oracles import dsl_generator as gen
from tests.oracles import hand_cases as hand

DOCS = gen.generate_documents()
DOCS_BY_ID = {d["doc_id"]: d for d in DOCS}
CASES = gen.all_differential_cases(DOCS)


def _case_id(name: str, query: dict[str, Any], limit: int = 400) -> str:
    text = gen.compact(query)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{name}:{text}"


def _params(cases):
    return [pytest.param(q, id=_case_id(n, q)) for n, q in cases]


def _hand_params(cases):
    return [pytest.param(q, expected, why, id=f"{n}:{gen.compact(q)}") for n, q, expected, why in cases]


# --------------------------------------------------------------------------------- fixtures
def _osmem_load(client, index: str, body: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    client.indices.create(index=index, body=body)
    ops: list[dict[str, Any]] = []
    for d in docs:
        ops += [{"index": {"_index": index, "_id": d["doc_id"]}}, d]
    res = client.bulk(body=ops, refresh=True)
    assert not res["errors"], [i for i in res["items"] if i["index"].get("error")][:3]
    assert client.count(index=index)["count"] == len(docs)


@pytest.fixture(scope="module")
def osmem(osmem_server):
    """An opensearch-py client on a writable clone of the session osmem server, loaded once."""
    clone = osmem_server.clone()
    client = opensearchpy.OpenSearch(hosts=[clone.url], timeout=30)
    _osmem_load(client, gen.INDEX, gen.INDEX_BODY, DOCS)
    _osmem_load(client, hand.MSM_INDEX, hand.MSM_INDEX_BODY, hand.MSM_DOCS)
    _osmem_load(client, hand.BEHAVIOUR_INDEX, hand.BEHAVIOUR_INDEX_BODY, hand.BEHAVIOUR_DOCS)
    yield client
    client.close()
    clone.close()


def _embedded_load(backend, index: str, body: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    from latentsearch.backends.base import BulkAction

    backend.create_index(index, copy.deepcopy(body))
    results = backend.bulk(index, [BulkAction(id=d["doc_id"], source=copy.deepcopy(d)) for d in docs], refresh=True)
    bad = [r for r in results if not r.ok]
    assert not bad, f"embedded bulk failed for {len(bad)} docs, e.g. {bad[:3]}"
    assert backend.count(index) == len(docs)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    import latentsearch.backends.embedded as emb

    backend = emb.EmbeddedBackend(tmp_path_factory.mktemp("embedded-diff") / "db")
    _embedded_load(backend, gen.INDEX, gen.INDEX_BODY, DOCS)
    _embedded_load(backend, hand.MSM_INDEX, hand.MSM_INDEX_BODY, hand.MSM_DOCS)
    _embedded_load(backend, hand.BEHAVIOUR_INDEX, hand.BEHAVIOUR_INDEX_BODY, hand.BEHAVIOUR_DOCS)
    yield backend
    backend.close()


# --------------------------------------------------------------------------------- helpers
def _ids(response: dict[str, Any]) -> set[str]:
    return {h["_id"] for h in response["hits"]["hits"]}


def osmem_ids(client, index: str, query: dict[str, Any]) -> set[str]:
    return _ids(client.search(index=index, body={"query": query, "size": gen.SIZE}))


def osmem_count(client, index: str, query: dict[str, Any]) -> int:
    return client.count(index=index, body={"query": query})["count"]


def _embedded_call(fn, query: dict[str, Any]):
    try:
        return fn()
    except Exception as e:  # a refusal or crash on an in-subset query is a finding, show the query
        pytest.fail(
            f"embedded engine raised {type(e).__name__}: {e}\nquery:\n{json.dumps(query, indent=2)}",
            pytrace=False,
        )


def embedded_ids(backend, index: str, query: dict[str, Any]) -> set[str]:
    return _ids(_embedded_call(lambda: backend.search(index, {"query": query, "size": gen.SIZE}), query))


def _doc_summary(doc_id: str) -> str:
    doc = DOCS_BY_ID.get(doc_id)
    if doc is None:
        return f"  {doc_id}: (not a generated doc)"
    slim = {k: v for k, v in doc.items() if k != "vector"}
    if "mentions" in slim:
        slim["mentions"] = [{k: v for k, v in m.items() if k != "vector"} for m in slim["mentions"]]
    return f"  {doc_id}: {json.dumps(slim, separators=(',', ':'))}"


def diff_message(query: dict[str, Any], oracle: set[str], got: set[str], oracle_name: str = "osmem") -> str:
    only_oracle = sorted(oracle - got)
    only_got = sorted(got - oracle)
    lines = [
        f"hit sets differ ({oracle_name}: {len(oracle)} hits, embedded: {len(got)} hits)",
        "query:",
        json.dumps(query, indent=2),
        f"only in {oracle_name} ({len(only_oracle)}): {only_oracle}",
        f"only in embedded ({len(only_got)}): {only_got}",
    ]
    shown = [d for d in only_oracle[:3] + only_got[:3] if d in DOCS_BY_ID]
    if shown:
        lines.append("some of the differing documents (vectors omitted):")
        lines += [_doc_summary(d) for d in shown]
    return "\n".join(lines)


# ---------------------------------------------------------- 1. osmem against hand answers
@pytest.mark.parametrize(("query", "expected", "why"), _hand_params(hand.MSM_CASES))
def test_osmem_msm_hand_case(osmem, query, expected, why):
    got = osmem_ids(osmem, hand.MSM_INDEX, query)
    assert got == expected, f"osmem disagrees with the hand evaluation ({why}): got {sorted(got)}"
    assert osmem_count(osmem, hand.MSM_INDEX, query) == len(expected)


@pytest.mark.parametrize(("query", "expected", "why"), _hand_params(hand.BEHAVIOUR_CASES))
def test_osmem_behaviour_hand_case(osmem, query, expected, why):
    got = osmem_ids(osmem, hand.BEHAVIOUR_INDEX, query)
    assert got == expected, f"osmem disagrees with the hand evaluation ({why}): got {sorted(got)}"
    assert osmem_count(osmem, hand.BEHAVIOUR_INDEX, query) == len(expected)


def test_generated_queries_are_not_degenerate(osmem):
    """Guards the generator: most generated queries must separate documents on the oracle."""
    generated = [q for n, q in CASES if n.startswith("g")]
    assert len(generated) >= 150
    sizes = [len(osmem_ids(osmem, gen.INDEX, q)) for q in generated]
    informative = sum(1 for s in sizes if 0 < s < len(DOCS))
    assert informative >= 0.7 * len(generated), sorted(sizes)


# ------------------------------------------------------- 2. embedded against hand answers
@pytest.mark.parametrize(("query", "expected", "why"), _hand_params(hand.MSM_CASES))
def test_embedded_msm_hand_case(embedded, query, expected, why):
    got = embedded_ids(embedded, hand.MSM_INDEX, query)
    if got != expected:
        pytest.fail(f"{why}\n" + diff_message(query, expected, got, "hand evaluation"), pytrace=False)
    count = _embedded_call(lambda: embedded.count(hand.MSM_INDEX, query), query)
    assert count == len(expected), f"count {count} != {len(expected)} for {gen.compact(query)}"


@pytest.mark.parametrize(("query", "expected", "why"), _hand_params(hand.BEHAVIOUR_CASES))
def test_embedded_behaviour_hand_case(embedded, query, expected, why):
    got = embedded_ids(embedded, hand.BEHAVIOUR_INDEX, query)
    if got != expected:
        pytest.fail(f"{why}\n" + diff_message(query, expected, got, "hand evaluation"), pytrace=False)
    count = _embedded_call(lambda: embedded.count(hand.BEHAVIOUR_INDEX, query), query)
    assert count == len(expected), f"count {count} != {len(expected)} for {gen.compact(query)}"


# ------------------------------------------------------------------ 3. differential suite
@pytest.mark.parametrize("query", _params(CASES))
def test_same_hits(osmem, embedded, query):
    expected = osmem_ids(osmem, gen.INDEX, query)
    got = embedded_ids(embedded, gen.INDEX, query)
    if got != expected:
        pytest.fail(diff_message(query, expected, got), pytrace=False)


@pytest.mark.parametrize("query", _params(CASES))
def test_same_count(osmem, embedded, query):
    expected = osmem_count(osmem, gen.INDEX, query)
    got = _embedded_call(lambda: embedded.count(gen.INDEX, query), query)
    assert got == expected, f"count: osmem {expected}, embedded {got}\nquery:\n{json.dumps(query, indent=2)}"
    total = _embedded_call(lambda: embedded.search(gen.INDEX, {"query": query, "size": 0}), query)["hits"]["total"]
    assert total["value"] == expected and total.get("relation", "eq") == "eq", (
        f"hits.total: osmem {expected} (eq), embedded {total}\nquery:\n{json.dumps(query, indent=2)}"
    )


def test_suite_size():
    generated = [n for n, _ in CASES if n.startswith("g")]
    edge = [n for n, _ in CASES if n.startswith("edge-")]
    assert len(generated) >= 50 and len(edge) >= 30
    assert len({n for n, _ in CASES}) == len(CASES)
    assert len(DOCS) >= 200


# --------------------------------------------------------- 4. refusals outside the subset
UNSUPPORTED = [
    ("fuzzy", {"query": {"fuzzy": {"text": {"value": "cel"}}}}),
    ("script", {"query": {"script": {"script": {"source": "doc['chunk.no'].value > 3"}}}}),
    ("avg", {"query": {"match_all": {}}, "aggs": {"mean_no": {"avg": {"field": "chunk.no"}}}}),
    ("wildcard", {"query": {"wildcard": {"latent.disease": {"value": "fl*"}}}}),
    ("query_string", {"query": {"query_string": {"query": "text:cell"}}}),
    ("fuzzy", {"query": {"bool": {"filter": [{"term": {"reviewed": True}}, {"fuzzy": {"text": "cel"}}]}}}),
    ("regexp", {"query": {"bool": {"must_not": [{"regexp": {"latent.disease": "fl.*"}}]}}}),
    ("prefix", {"query": {"nested": {"path": "mentions", "query": {"prefix": {"mentions.text": "fl"}}}}}),
]


@pytest.mark.parametrize(("clause", "body"), [pytest.param(c, b, id=f"{c}:{gen.compact(b)}") for c, b in UNSUPPORTED])
def test_unsupported_clause_is_refused(embedded, clause, body):
    from latentsearch.backends.base import UnsupportedQueryError

    with pytest.raises(UnsupportedQueryError) as info:
        embedded.search(gen.INDEX, body)
    assert clause in str(info.value), f"the message does not name `{clause}`: {info.value}"
    assert info.value.clause == clause


@pytest.mark.parametrize(
    ("clause", "query"),
    [
        pytest.param(c, q, id=f"{c}:{gen.compact(q)}")
        for c, q in [("fuzzy", {"fuzzy": {"text": "cel"}}), ("script", {"script": {"script": {"source": "true"}}})]
    ],
)
def test_unsupported_clause_is_refused_by_count(embedded, clause, query):
    from latentsearch.backends.base import UnsupportedQueryError

    with pytest.raises(UnsupportedQueryError) as info:
        embedded.count(gen.INDEX, query)
    assert clause in str(info.value)


# --------------------------------------------------------- 5. terms aggregation (the rewriter's vocabulary read)
AGG_QUERIES = [
    {"match_all": {}},
    {"term": {"reviewed": True}},
    {"bool": {"must_not": [{"term": {"reviewed": True}}]}},
]


@pytest.mark.parametrize("query", AGG_QUERIES, ids=[gen.compact(q) for q in AGG_QUERIES])
@pytest.mark.parametrize("field", ["latent.disease", "chunk.no"])
def test_terms_aggregation_matches_opensearch(osmem, embedded, query, field):
    """Bucket keys and doc counts equal osmem's (all buckets, so tie order cannot differ), and the
    top-3 cut keeps the same counts and sum_other_doc_count."""
    def buckets(resp):
        agg = resp["aggregations"]["v"]
        return {str(b["key"]): b["doc_count"] for b in agg["buckets"]}, agg["sum_other_doc_count"]

    for size in (1000, 3):
        body = {"size": 0, "query": query, "aggs": {"v": {"terms": {"field": field, "size": size}}}}
        want, want_other = buckets(osmem.search(index=gen.INDEX, body=copy.deepcopy(body)))
        got, got_other = buckets(_embedded_call(lambda b=body: embedded.search(gen.INDEX, copy.deepcopy(b)), query))
        if size == 1000:
            assert got == want, f"{field} buckets differ for {json.dumps(query)}"
        else:
            assert sorted(got.values()) == sorted(want.values()) and got_other == want_other
