"""Hybrid fusion in the embedded engine against hand-computed scores.

Each sub-query is a `bool.should` of `constant_score` clauses, so the test chooses every raw score:

    sub-query A: a=3, c=2, b=1          sub-query B: b=4, c=2, d=1

The expected fused scores below are written out by hand from OpenSearch's definitions
(neural-search: a document a sub-query did not return has no score there and its weight is left
out of the mean; min_max maps the sub-query's lowest score to 0.001, not 0; l2 divides by the
norm of the sub-query's scores; rrf sums 1/(rank_constant + rank)). Weights are asymmetric
(0.3/0.7) and the reversed weights must change the order, so a weight mix-up cannot pass.
"""

from __future__ import annotations

import math

import pytest

from latentsearch.backends.base import BackendError, BulkAction, UnsupportedQueryError
from latentsearch.backends.embedded import EmbeddedBackend

A = {"a": 3.0, "c": 2.0, "b": 1.0}
B = {"b": 4.0, "c": 2.0, "d": 1.0}


def _sub(scores: dict[str, float]) -> dict:
    return {"bool": {"should": [{"constant_score": {"filter": {"term": {"tag": doc}}, "boost": s}}
                                for doc, s in scores.items()]}}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBackend:
    b = EmbeddedBackend(tmp_path_factory.mktemp("fusion") / "db")
    b.create_index("f", {"mappings": {"properties": {"tag": {"type": "keyword"}}}})
    b.bulk("f", [BulkAction(d, {"tag": d}) for d in ("a", "b", "c", "d", "e")])  # e: matched by neither
    return b


def _fused(backend: EmbeddedBackend, pipeline: dict) -> dict[str, float]:
    body = {"query": {"hybrid": {"queries": [_sub(A), _sub(B)]}}, "size": 10, "search_pipeline": pipeline}
    return {h["_id"]: h["_score"] for h in backend.search("f", body)["hits"]["hits"]}


def _norm(technique: str, combination: str, weights: list[float]) -> dict:
    return {"phase_results_processors": [{"normalization-processor": {
        "normalization": {"technique": technique},
        "combination": {"technique": combination, "parameters": {"weights": weights}}}}]}


def _rrf(rank_constant: int) -> dict:
    return {"phase_results_processors": [{"score-ranker-processor": {
        "combination": {"technique": "rrf", "rank_constant": rank_constant}}}]}


# normalised per sub-query, by hand
MIN_MAX_A = {"a": (3 - 1) / (3 - 1), "c": (2 - 1) / (3 - 1), "b": 0.001}  # the minimum becomes 0.001
MIN_MAX_B = {"b": (4 - 1) / (4 - 1), "c": (2 - 1) / (4 - 1), "d": 0.001}
L2_A = {d: s / math.sqrt(3**2 + 2**2 + 1**2) for d, s in A.items()}
L2_B = {d: s / math.sqrt(4**2 + 2**2 + 1**2) for d, s in B.items()}


def _arith(xa: float | None, xb: float | None, wa: float, wb: float) -> float:
    num = (wa * xa if xa is not None else 0) + (wb * xb if xb is not None else 0)
    return num / (wa + wb)  # a missing sub-query still counts its weight (OpenSearch 2.19)


EXPECTED = {
    # a: only A; b, c: both; d: only B
    # arithmetic_mean: a sub-query that missed the document counts 0 with its weight (OpenSearch 2.19, found by
    # the real-node differential, tests/test_differential_opensearch.py); geometric/harmonic skip it
    ("min_max", "arithmetic_mean"): {
        "a": 0.3 * 1.0, "b": 0.3 * 0.001 + 0.7 * 1.0, "c": 0.3 * 0.5 + 0.7 * (1 / 3), "d": 0.7 * 0.001},
    ("min_max", "geometric_mean"): {
        "a": 1.0, "b": 0.001**0.3 * 1.0**0.7, "c": 0.5**0.3 * (1 / 3) ** 0.7, "d": 0.001},
    ("min_max", "harmonic_mean"): {
        "a": 1.0, "b": 1.0 / (0.3 / 0.001 + 0.7 / 1.0), "c": 1.0 / (0.3 / 0.5 + 0.7 / (1 / 3)), "d": 0.001},
    ("l2", "arithmetic_mean"): {
        "a": 0.3 * 3 / math.sqrt(14), "b": 0.3 * 1 / math.sqrt(14) + 0.7 * 4 / math.sqrt(21),
        "c": 0.3 * 2 / math.sqrt(14) + 0.7 * 2 / math.sqrt(21), "d": 0.7 * 1 / math.sqrt(21)},
    ("l2", "geometric_mean"): {
        "a": 3 / math.sqrt(14), "b": (1 / math.sqrt(14)) ** 0.3 * (4 / math.sqrt(21)) ** 0.7,
        "c": (2 / math.sqrt(14)) ** 0.3 * (2 / math.sqrt(21)) ** 0.7, "d": 1 / math.sqrt(21)},
    ("l2", "harmonic_mean"): {
        "a": 3 / math.sqrt(14), "b": 1.0 / (0.3 * math.sqrt(14) / 1 + 0.7 * math.sqrt(21) / 4),
        "c": 1.0 / (0.3 * math.sqrt(14) / 2 + 0.7 * math.sqrt(21) / 2), "d": 1 / math.sqrt(21)},
}


@pytest.mark.parametrize(("technique", "combination"), sorted(EXPECTED))
def test_normalisation_and_combination_with_asymmetric_weights(backend, technique: str, combination: str) -> None:
    got = _fused(backend, _norm(technique, combination, [0.3, 0.7]))
    expected = EXPECTED[(technique, combination)]
    assert set(got) == set(expected)  # e matched neither sub-query
    for doc, score in expected.items():
        assert got[doc] == pytest.approx(score, rel=1e-5), doc
    assert list(got) == sorted(expected, key=lambda d: -expected[d])  # hits come in fused-score order


def test_the_tables_own_helpers_agree() -> None:
    """The hand-written arithmetic means equal the generic formula on the normalised tables."""
    for d in "abcd":
        mm = _arith(MIN_MAX_A.get(d), MIN_MAX_B.get(d), 0.3, 0.7)
        l2 = _arith(L2_A.get(d), L2_B.get(d), 0.3, 0.7)
        assert EXPECTED[("min_max", "arithmetic_mean")][d] == pytest.approx(mm)
        assert EXPECTED[("l2", "arithmetic_mean")][d] == pytest.approx(l2)


def test_weights_are_applied_per_sub_query_in_order(backend) -> None:
    """0.3/0.7 ranks b (B's best) above c; 0.7/0.3 ranks c above b: the weights are not symmetric."""
    forward = _fused(backend, _norm("min_max", "arithmetic_mean", [0.3, 0.7]))
    reverse = _fused(backend, _norm("min_max", "arithmetic_mean", [0.7, 0.3]))
    assert forward["b"] > forward["c"]
    assert reverse["c"] > reverse["b"]
    assert reverse["b"] == pytest.approx(0.7 * 0.001 + 0.3 * 1.0)


@pytest.mark.parametrize("rank_constant", [1, 60])
def test_rrf_sums_reciprocal_ranks(backend, rank_constant: int) -> None:
    k = rank_constant  # ranks: A = a, c, b; B = b, c, d
    expected = {"a": 1 / (k + 1), "c": 1 / (k + 2) + 1 / (k + 2), "b": 1 / (k + 3) + 1 / (k + 1), "d": 1 / (k + 3)}
    got = _fused(backend, _rrf(rank_constant))
    assert got == pytest.approx(expected, rel=1e-6)
    assert list(got) == sorted(expected, key=lambda d: -expected[d])


def test_rrf_uses_ranks_not_scores(backend) -> None:
    """RRF uses ranks only: scaling one sub-query's scores by 100 changes nothing."""
    body = {"query": {"hybrid": {"queries": [_sub({d: s * 100 for d, s in A.items()}), _sub(B)]}}, "size": 10,
            "search_pipeline": _rrf(60)}
    scaled = {h["_id"]: h["_score"] for h in backend.search("f", body)["hits"]["hits"]}
    assert scaled == pytest.approx(_fused(backend, _rrf(60)))


@pytest.mark.parametrize(("pipeline", "supported"), [
    (_norm("z_score", "arithmetic_mean", [0.5, 0.5]), "min_max, l2"),
    (_norm("min_max", "max", [0.5, 0.5]), "arithmetic_mean, geometric_mean, harmonic_mean"),
    ({"phase_results_processors": [{"score-ranker-processor": {"combination": {"technique": "borda"}}}]}, "rrf"),
    ({"phase_results_processors": [{"score-ranker-processor": {
        "combination": {"technique": "rrf", "parameters": {"weights": [0.3, 0.7]}}}}]}, "unweighted"),
    ({"phase_results_processors": [{"collapse": {"field": "tag"}}]}, "normalization-processor, score-ranker-processor"),
])
def test_unsupported_fusion_is_refused_with_the_supported_list(backend, pipeline: dict, supported: str) -> None:
    with pytest.raises(UnsupportedQueryError, match=supported):
        _fused(backend, pipeline)


def test_weight_count_and_rank_constant_are_checked(backend) -> None:
    with pytest.raises(BackendError, match="2 sub-queries but the pipeline gives 3 weights"):
        _fused(backend, _norm("min_max", "arithmetic_mean", [0.2, 0.3, 0.5]))
    with pytest.raises(BackendError, match="rank_constant must be >= 1"):
        _fused(backend, _rrf(0))
