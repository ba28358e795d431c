"""The embedded engine: kNN against numpy brute force (oracle 4), ANN recall, persistence, bulk
semantics, nested kNN with inner hits, hybrid fusion, collapse, _source filtering and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentsearch import dsl
from latentsearch.backends.base import BackendError, BulkAction, IndexNotFoundError, UnsupportedQueryError
from latentsearch.backends.embedded import EmbeddedBackend

DIM = 32


def _mapping(space: str = "cosinesimil", dim: int = DIM) -> dict:
    return {
        "settings": {"index": {"knn": True}},
        "mappings": {
            "properties": {
                "doc_id": {"type": "keyword"},
                "group": {"type": "keyword"},
                "n": {"type": "integer"},
                "text": {"type": "text"},
                "vector": {"type": "knn_vector", "dimension": dim, "method": {"name": "hnsw", "space_type": space, "engine": "lucene"}},
                "mentions": {
                    "type": "nested",
                    "properties": {
                        "text": {"type": "keyword"},
                        "vector": {"type": "knn_vector", "dimension": 4, "method": {"name": "hnsw", "space_type": "cosinesimil"}},
                    },
                },
            }
        },
    }


def _fill(backend: EmbeddedBackend, index: str, n: int, seed: int = 0, space: str = "cosinesimil") -> np.ndarray:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    backend.create_index(index, _mapping(space))
    actions = [
        BulkAction(str(i), {"doc_id": f"d{i // 2}", "group": f"g{i % 5}", "n": i, "text": f"item number {i}",
                            "vector": vecs[i].tolist()})
        for i in range(n)
    ]
    for i in range(0, n, 1000):
        results = backend.bulk(index, actions[i : i + 1000])
        assert all(r.ok for r in results)
    return vecs


def _brute_force(vecs: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[str]:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ (q / np.linalg.norm(q))
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    order = np.argsort(-sims, kind="stable")[:k]
    return [str(i) for i in order if np.isfinite(sims[i])]


@pytest.fixture(scope="module")
def knn_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[EmbeddedBackend, np.ndarray]:
    backend = EmbeddedBackend(tmp_path_factory.mktemp("knn") / "db")
    vecs = _fill(backend, "vecs", 3000)
    return backend, vecs


def test_knn_exact_matches_numpy_brute_force(knn_index) -> None:
    backend, vecs = knn_index
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=DIM).astype(np.float32)
        res = backend.search("vecs", {"size": 10, "query": dsl.knn("vector", q.tolist(), k=10)})
        got = [h["_id"] for h in res["hits"]["hits"]]
        assert got == _brute_force(vecs, q, 10)  # recall@10 = 1.0, same order
        cos = (vecs[int(got[0])] @ q) / (np.linalg.norm(vecs[int(got[0])]) * np.linalg.norm(q))
        assert res["hits"]["hits"][0]["_score"] == pytest.approx((1 + cos) / 2, abs=1e-5)  # cosinesimil score


def test_knn_filter_is_applied_before_k(knn_index) -> None:
    backend, vecs = knn_index
    q = np.random.default_rng(2).normal(size=DIM).astype(np.float32)
    flt = dsl.bool_query(filter=[dsl.term("group", "g3"), dsl.range_("n", lt=2000)])
    res = backend.search("vecs", {"size": 10, "query": dsl.knn("vector", q.tolist(), k=10, filter=flt)})
    allowed = np.array([(i % 5 == 3) and i < 2000 for i in range(len(vecs))])
    got = [h["_id"] for h in res["hits"]["hits"]]
    assert got == _brute_force(vecs, q, 10, allowed)
    assert res["hits"]["total"]["value"] == 10  # efficient filtering: still k hits, not a post-filter


def test_knn_radial_min_score_and_max_distance(knn_index) -> None:
    backend, vecs = knn_index
    q = vecs[7]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = (1 + unit @ (q / np.linalg.norm(q))) / 2
    res = backend.search("vecs", {"size": 10_000, "query": dsl.knn("vector", q.tolist(), k=None, min_score=0.6)})
    assert {h["_id"] for h in res["hits"]["hits"]} == {str(i) for i in np.flatnonzero(scores >= 0.6)}
    res = backend.search("vecs", {"size": 10_000, "query": dsl.knn("vector", q.tolist(), k=None, max_distance=0.8)})
    assert {h["_id"] for h in res["hits"]["hits"]} == {str(i) for i in np.flatnonzero(1 - (2 * scores - 1) <= 0.8)}


def test_knn_l2_and_innerproduct_scores(tmp_path: Path) -> None:
    for space, expect in (
        ("l2", lambda v, q: 1 / (1 + np.sum((v - q) ** 2))),
        ("innerproduct", lambda v, q: (v @ q) + 1 if v @ q > 0 else 1 / (1 - v @ q)),
    ):
        backend = EmbeddedBackend(tmp_path / space)
        vecs = _fill(backend, "s", 200, space=space)
        q = vecs[3] * 0.5
        hit = backend.search("s", {"query": dsl.knn("vector", q.tolist(), k=1)})["hits"]["hits"][0]
        assert hit["_score"] == pytest.approx(float(expect(vecs[int(hit["_id"])], q)), rel=1e-4)


def test_ann_index_recall_at_10(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db", exact_search_max_candidates=500)
    vecs = _fill(backend, "ann", 6000, seed=5)
    assert backend.create_vector_index("ann", "vector")
    rng = np.random.default_rng(9)
    recalls = []
    for _ in range(30):
        q = rng.normal(size=DIM).astype(np.float32)
        res = backend.search("ann", {"size": 10, "query": dsl.knn("vector", q.tolist(), k=10)})
        got = {h["_id"] for h in res["hits"]["hits"]}
        recalls.append(len(got & set(_brute_force(vecs, q, 10))) / 10)
    assert np.mean(recalls) >= 0.95, recalls


def test_persists_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    _fill(backend, "p", 50)
    code = (
        "import json,sys; from latentsearch.backends.embedded import EmbeddedBackend as E; b=E(sys.argv[1]); "
        "print(json.dumps([b.count('p'), b.get('p','7')['n'], b.list_indices()]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [50, 7, ["p"]]


def test_bulk_upsert_is_idempotent_and_per_item_errors_do_not_block(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("u", _mapping())
    v = [1.0] * DIM
    doc = {"doc_id": "a", "n": 1, "vector": v, "mentions": [{"text": "x", "vector": [1, 0, 0, 0]}, {"text": "y", "vector": [0, 1, 0, 0]}]}
    backend.bulk("u", [BulkAction("a#0", doc)])
    results = backend.bulk("u", [
        BulkAction("a#0", {**doc, "n": 2, "mentions": [{"text": "z", "vector": [0, 0, 1, 0]}]}),
        BulkAction("bad-dim", {"doc_id": "b", "vector": [1.0, 2.0]}),
        BulkAction("bad-int", {"doc_id": "c", "n": "many"}),
        BulkAction("ok", {"doc_id": "d", "n": 5}),
    ])
    assert [r.status for r in results] == [200, 400, 400, 201]  # a0 existed: updated
    assert "dimension" in results[1].error and "`n`" in results[2].error
    assert backend.count("u") == 2
    assert backend.get("u", "a#0")["n"] == 2
    # the nested rows were replaced, not appended
    res = backend.search("u", {"query": dsl.nested("mentions", dsl.match_all())})
    assert res["hits"]["total"]["value"] == 1
    assert backend.count("u", dsl.nested("mentions", dsl.term("mentions.text", "x"))) == 0
    backend.bulk("u", [BulkAction("ok", op="delete")])
    assert backend.get("u", "ok") is None and backend.count("u") == 1


def test_nested_knn_counts_documents_and_shows_matching_mentions(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("m", _mapping())
    docs = {
        "d1": [[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0]],
        "d2": [[0.8, 0.2, 0, 0]],
        "d3": [[0, 1, 0, 0]],
    }
    backend.bulk("m", [BulkAction(d, {"doc_id": d, "mentions": [{"text": f"{d}-{i}", "vector": v} for i, v in enumerate(ms)]})
                       for d, ms in docs.items()])
    q = dsl.nested("mentions", dsl.knn("mentions.vector", [1, 0, 0, 0], k=2), score_mode="max", inner_hits={"size": 5})
    res = backend.search("m", {"query": q, "size": 10})
    assert [h["_id"] for h in res["hits"]["hits"]] == ["d1", "d2"]  # k counts documents, each once
    inner = res["hits"]["hits"][0]["inner_hits"]["mentions"]["hits"]["hits"]
    assert [h["_source"]["text"] for h in inner] == ["d1-0"]
    expand = {"nested": {"path": "mentions", "score_mode": "max", "inner_hits": {"size": 5},
                         "query": {"knn": {"mentions.vector": {"vector": [1, 0, 0, 0], "k": 2, "expand_nested_docs": True}}}}}
    inner = backend.search("m", {"query": expand})["hits"]["hits"][0]["inner_hits"]["mentions"]["hits"]["hits"]
    assert [h["_source"]["text"] for h in inner] == ["d1-0", "d1-1", "d1-2"]
    assert [h["_nested"]["offset"] for h in inner] == [0, 1, 2]


def test_hybrid_min_max_and_rrf(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    vecs = _fill(backend, "h", 100)
    q = vecs[11]
    body = dsl.search_body(
        dsl.hybrid([dsl.match("text", "42"), dsl.knn("vector", q.tolist(), k=5)]),
        size=10, search_pipeline=dsl.normalization_pipeline(weights=[0.5, 0.5]),
    )
    hits = backend.search("h", body)["hits"]["hits"]
    ids = [h["_id"] for h in hits]
    assert set(ids) == {"42", *_brute_force(vecs, q, 5)}
    assert hits[0]["_score"] <= 1.0 and ids[0] == "11"  # top of the kNN list, normalised to 1 there
    rrf = {"phase_results_processors": [{"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}}]}
    hits = backend.search("h", {**body, "search_pipeline": rrf})["hits"]["hits"]
    assert hits[0]["_score"] == pytest.approx(1 / 61 + (1 / 62 if hits[0]["_id"] == "42" else 0))


def test_collapse_source_filtering_and_pagination(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    vecs = _fill(backend, "c", 40)
    body = dsl.search_body(dsl.knn("vector", vecs[0].tolist(), k=20), size=5, collapse_field="doc_id")
    res = backend.search("c", body)
    doc_ids = [h["fields"]["doc_id"][0] for h in res["hits"]["hits"]]
    assert len(doc_ids) == len(set(doc_ids)) == 5
    assert all("vector" not in h["_source"] for h in res["hits"]["hits"])
    full = backend.search("c", {"query": dsl.knn("vector", vecs[0].tolist(), k=20), "size": 20, "_source": ["n"]})
    assert set(full["hits"]["hits"][0]["_source"]) == {"n"}
    page2 = backend.search("c", {"query": dsl.knn("vector", vecs[0].tolist(), k=20), "size": 5, "from": 5})
    assert [h["_id"] for h in page2["hits"]["hits"]] == [h["_id"] for h in full["hits"]["hits"][5:10]]
    src = backend.get("c", "3")
    assert src["vector"] == pytest.approx(vecs[3].tolist())


def test_msearch_runs_every_body(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    _fill(backend, "ms", 30)
    bodies = [{"query": dsl.term("group", f"g{i}"), "size": 100} for i in range(5)]
    responses = backend.msearch("ms", bodies)
    assert [r["hits"]["total"]["value"] for r in responses] == [6, 6, 6, 6, 6]


def test_clear_errors(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    _fill(backend, "e", 5)
    with pytest.raises(UnsupportedQueryError, match="fuzzy"):
        backend.search("e", {"query": {"fuzzy": {"text": "itme"}}})
    with pytest.raises(UnsupportedQueryError, match="avg"):  # `terms` is the one aggregation it runs
        backend.search("e", {"query": {"match_all": {}}, "aggs": {"m": {"avg": {"field": "group"}}}})
    # an unmapped field matches nothing, as in OpenSearch; k-NN on one is an error there too
    assert backend.search("e", {"query": dsl.term("colour", "red")})["hits"]["total"]["value"] == 0
    with pytest.raises(BackendError, match="not mapped.*Mapped fields"):
        backend.search("e", {"query": dsl.knn("colour_vector", [1.0, 2.0], k=1)})
    with pytest.raises(BackendError, match="nested"):
        backend.search("e", {"query": dsl.term("mentions.text", "x")})
    with pytest.raises(BackendError, match="dimension"):
        backend.search("e", {"query": dsl.knn("vector", [1.0, 2.0], k=1)})
    with pytest.raises(IndexNotFoundError, match="latentsearch ingest"):
        backend.search("nope", {"query": dsl.match_all()})
    with pytest.raises(BackendError, match="already exists"):
        backend.create_index("e", _mapping())
    with pytest.raises(BackendError, match="not support"):
        backend.create_index("geo", {"mappings": {"properties": {"where": {"type": "geo_point"}}}})


def test_two_handles_see_each_others_writes(tmp_path: Path) -> None:
    writer, reader = EmbeddedBackend(tmp_path / "db"), EmbeddedBackend(tmp_path / "db")
    _fill(writer, "s", 10)
    assert reader.count("s") == 10
    writer.bulk("s", [BulkAction("new", {"doc_id": "x", "n": 99})])
    assert reader.count("s") == 11 and reader.get("s", "new")["n"] == 99
    assert reader.count("s", dsl.term("n", 99)) == 1  # the snapshot is rebuilt on a new version


def test_dynamic_mapping_makes_metadata_filterable(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("dyn", {"mappings": {"properties": {"text": {"type": "text"},
                                                             "metadata": {"type": "object", "dynamic": "true"},
                                                             "fixed": {"type": "object", "dynamic": "strict", "properties": {}}}}})
    backend.bulk("dyn", [BulkAction("1", {"text": "a", "metadata": {"journal": "Nature Medicine", "year": 2019, "oa": True}})])
    results = backend.bulk("dyn", [
        BulkAction("2", {"text": "b", "metadata": {"journal": "Cell", "year": 2021, "published": "2021-03-04"}}),
        BulkAction("3", {"text": "c", "fixed": {"surprise": 1}}),
        BulkAction("4", {"text": "d", "metadata": {"year": "soon"}}),
    ])
    assert [r.status for r in results] == [201, 400, 400]
    assert "strict" in results[1].error
    props = backend.get_mapping("dyn")["properties"]["metadata"]["properties"]
    assert props["year"] == {"type": "long"} and props["published"] == {"type": "date"}
    assert props["journal"]["fields"]["keyword"]["type"] == "keyword"
    assert backend.count("dyn", dsl.term("metadata.journal.keyword", "Nature Medicine")) == 1
    assert backend.count("dyn", dsl.range_("metadata.year", gte=2020)) == 1
    assert backend.count("dyn", dsl.match("metadata.journal", "cell")) == 1
    assert backend.count("dyn", dsl.range_("metadata.published", gte="2021-01-01")) == 1
    assert backend.count("dyn", dsl.term("metadata.oa", True)) == 1
    assert EmbeddedBackend(tmp_path / "db").count("dyn", dsl.term("metadata.year", 2021)) == 1  # persisted


def test_hybrid_filter_and_pagination_depth(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    vecs = _fill(backend, "hf", 60)
    flt = dsl.term("group", "g1")
    body = {"size": 10, "query": {"hybrid": {"queries": [dsl.match("text", "item"), dsl.knn("vector", vecs[0].tolist(), k=5)],
                                             "filter": flt, "pagination_depth": 20}}}
    hits = backend.search("hf", body)["hits"]["hits"]
    assert hits and all(backend.get("hf", h["_id"])["group"] == "g1" for h in hits)
    knn_only = {"size": 10, "query": {"hybrid": {"queries": [dsl.knn("vector", vecs[0].tolist(), k=5)], "filter": flt}}}
    assert len(backend.search("hf", knn_only)["hits"]["hits"]) == 5  # the filter went inside k-NN: still k hits
    with pytest.raises(UnsupportedQueryError, match="hybrid.bogus"):
        backend.search("hf", {"query": {"hybrid": {"queries": [dsl.match_all()], "bogus": 1}}})


def test_dotted_keys_dates_and_integer_coercion(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("dk", {"mappings": {"properties": {"n": {"type": "long"}}}})
    results = backend.bulk("dk", [
        BulkAction("1", {"metadata.source.name": "pubmed", "when": "2021/03/04", "n": 3.7}),
        BulkAction("2", {"when": "2021-13-45", "n": 1e400}),
    ])
    assert [r.status for r in results] == [201, 400]  # inf cannot be a long; the rest of the batch lands
    assert backend.count("dk", dsl.term("metadata.source.name.keyword", "pubmed")) == 1
    assert backend.count("dk", dsl.range_("when", gte="2021-03-01")) == 1
    assert backend.count("dk", dsl.term("n", 3)) == 1  # OpenSearch coerces 3.7 to 3 on a long field
    assert backend.get_mapping("dk")["properties"]["when"] == {"type": "date"}


def test_dsl_builders_negative_msm_and_radial_default() -> None:
    q = dsl.bool_query(should=[dsl.term("a", 1)] * 3, minimum_should_match=-1)
    assert q["bool"]["minimum_should_match"] == 2
    assert "k" not in dsl.knn("v", [1.0], min_score=0.5)["knn"]["v"]
    assert dsl.knn("v", [1.0])["knn"]["v"]["k"] == 10
