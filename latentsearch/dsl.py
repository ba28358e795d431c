"""Typed builders for the OpenSearch Query DSL that latentsearch emits.

Every builder returns a plain dict that is a valid OpenSearch request fragment (the conformance
tests validate them against the official OpenAPI spec). The embedded engine executes exactly
this subset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

Query: TypeAlias = dict[str, Any]
MinimumShouldMatch: TypeAlias = int | str

_MSM_SIMPLE = re.compile(r"^-?\d+%?$")
_MSM_CONDITION = re.compile(r"^\d+<-?\d+%?$")


def validate_msm(spec: MinimumShouldMatch) -> str:
    """Check a `minimum_should_match` value (int, '-1', '75%', '-25%', '3<90%', '2<-25% 9<-3')."""
    text = str(spec).strip()
    text = re.sub(r"\s*<\s*", "<", text)
    parts = text.split()
    if not parts:
        raise ValueError("minimum_should_match is empty")
    if len(parts) == 1 and _MSM_SIMPLE.match(parts[0]):
        return text
    if all(_MSM_CONDITION.match(p) for p in parts):
        return text
    raise ValueError(
        f"invalid minimum_should_match {spec!r}: use an int (2, -1), a percent (75%, -25%) or "
        "conditions like '3<90%' / '2<-25% 9<-3'"
    )


def resolve_msm(spec: MinimumShouldMatch | None, optional_clauses: int) -> int:
    """How many of `optional_clauses` should-clauses must match (Lucene/OpenSearch semantics).

    Mirrors `Queries.calculateMinShouldMatch`: negative values count from the clause total,
    percentages round toward zero, `a<b` applies `b` only when there are more than `a` clauses.
    The result may exceed the clause count (then nothing matches) and is never negative.
    """
    if spec is None:
        return 0
    text = validate_msm(spec)
    result = optional_clauses
    if "<" in text:
        for part in text.split():
            upper, rule = part.split("<", 1)
            if optional_clauses <= int(upper):
                return result
            result = resolve_msm(rule, optional_clauses)
        return result
    if text.endswith("%"):
        # Java: float calc = n * pct / 100; the sign is tested before truncation toward zero,
        # so "-25%" of 3 clauses (calc = -0.75) requires all 3.
        calc = optional_clauses * int(text[:-1]) / 100
        result = optional_clauses + int(calc) if calc < 0 else int(calc)
    else:
        calc = int(text)
        result = optional_clauses + calc if calc < 0 else calc
    return max(result, 0)


def clamp_msm(value: int, n: int) -> int:
    """Clamp an absolute msm to [1, n]: above n matches nothing, 0 silently drops the constraint."""
    if n <= 0:
        raise ValueError("cannot clamp minimum_should_match without should clauses")
    value = int(value)
    if value < 0:  # OpenSearch: -1 means "all but one"
        value += n
    return max(1, min(value, n))


# ---------------------------------------------------------------- leaf queries


def term(field: str, value: Any, *, boost: float | None = None) -> Query:
    body: dict[str, Any] = {"value": value}
    if boost is not None:
        body["boost"] = boost
    return {"term": {field: body}}


def terms(field: str, values: Sequence[Any], *, boost: float | None = None) -> Query:
    body: dict[str, Any] = {field: list(values)}
    if boost is not None:
        body["boost"] = boost
    return {"terms": body}


def match(
    field: str,
    query: str,
    *,
    operator: Literal["or", "and"] | None = None,
    minimum_should_match: MinimumShouldMatch | None = None,
    boost: float | None = None,
) -> Query:
    body: dict[str, Any] = {"query": query}
    if operator:
        body["operator"] = operator
    if minimum_should_match is not None:
        body["minimum_should_match"] = validate_msm(minimum_should_match)
    if boost is not None:
        body["boost"] = boost
    return {"match": {field: body}}


def multi_match(
    query: str,
    fields: Sequence[str],
    *,
    type: Literal["best_fields", "most_fields"] = "best_fields",
    operator: Literal["or", "and"] | None = None,
    minimum_should_match: MinimumShouldMatch | None = None,
    tie_breaker: float | None = None,
) -> Query:
    body: dict[str, Any] = {"query": query, "fields": list(fields), "type": type}
    if operator:
        body["operator"] = operator
    if minimum_should_match is not None:
        body["minimum_should_match"] = validate_msm(minimum_should_match)
    if tie_breaker is not None:
        body["tie_breaker"] = tie_breaker
    return {"multi_match": body}


def range_(
    field: str, *, gt: Any = None, gte: Any = None, lt: Any = None, lte: Any = None
) -> Query:
    bounds = {k: v for k, v in {"gt": gt, "gte": gte, "lt": lt, "lte": lte}.items() if v is not None}
    if not bounds:
        raise ValueError("range needs at least one of gt, gte, lt, lte")
    return {"range": {field: bounds}}


def exists(field: str) -> Query:
    return {"exists": {"field": field}}


def ids(values: Sequence[str]) -> Query:
    return {"ids": {"values": list(values)}}


def match_all() -> Query:
    return {"match_all": {}}


# ---------------------------------------------------------------- compound queries


def bool_query(
    *,
    must: Sequence[Query] = (),
    should: Sequence[Query] = (),
    filter: Sequence[Query] = (),
    must_not: Sequence[Query] = (),
    minimum_should_match: MinimumShouldMatch | None = None,
    clamp: bool = True,
    boost: float | None = None,
) -> Query:
    """A bool query. With `clamp` an integer msm is clamped to [1, len(should)] (OpenSearch itself
    returns nothing for msm > n and ignores 0); string forms ('75%', '3<90%') pass as written."""
    body: dict[str, Any] = {}
    for key, clauses in (("must", must), ("should", should), ("filter", filter), ("must_not", must_not)):
        if clauses:
            body[key] = list(clauses)
    if minimum_should_match is not None:
        if not should:
            raise ValueError("minimum_should_match needs should clauses")
        if isinstance(minimum_should_match, int) and clamp:
            minimum_should_match = clamp_msm(minimum_should_match, len(should))
        body["minimum_should_match"] = (
            minimum_should_match if isinstance(minimum_should_match, int) else validate_msm(minimum_should_match)
        )
    if boost is not None:
        body["boost"] = boost
    return {"bool": body}


def knn(
    field: str,
    vector: Sequence[float],
    *,
    k: int | None = None,
    filter: Query | None = None,
    min_score: float | None = None,
    max_distance: float | None = None,
    ef_search: int | None = None,
    boost: float | None = None,
) -> Query:
    """A k-NN clause (k defaults to 10 unless a radial `min_score`/`max_distance` is given). The
    filter goes *inside* (efficient filtering: filter first, then take k), never as a bool
    sibling, which would post-filter and return fewer than k hits."""
    radial = [x for x in (min_score, max_distance) if x is not None]
    if len(radial) > 1 or (radial and k is not None):
        raise ValueError("use exactly one of k, min_score, max_distance")
    if not radial:
        k = 10 if k is None else k
        if k <= 0:
            raise ValueError("k must be a positive integer")
    body: dict[str, Any] = {"vector": [float(x) for x in vector]}
    if k is not None and not radial:
        body["k"] = int(k)
    if min_score is not None:
        body["min_score"] = float(min_score)
    if max_distance is not None:
        body["max_distance"] = float(max_distance)
    if filter:
        body["filter"] = filter
    if ef_search is not None:
        body["method_parameters"] = {"ef_search": int(ef_search)}
    if boost is not None:
        body["boost"] = boost
    return {"knn": {field: body}}


def nested(
    path: str,
    query: Query,
    *,
    score_mode: Literal["max", "avg", "sum", "min", "none"] = "max",
    inner_hits: Mapping[str, Any] | None = None,
) -> Query:
    body: dict[str, Any] = {"path": path, "query": query, "score_mode": score_mode}
    if inner_hits is not None:
        body["inner_hits"] = dict(inner_hits)
    return {"nested": body}


def hybrid(queries: Sequence[Query]) -> Query:
    """OpenSearch `hybrid` (neural-search): scores of sub-queries are normalised and combined by a
    search pipeline's normalization-processor (see `normalization_pipeline`)."""
    if not 1 <= len(queries) <= 5:
        raise ValueError("hybrid takes 1 to 5 sub-queries")
    return {"hybrid": {"queries": list(queries)}}


def normalization_pipeline(
    technique: Literal["min_max", "l2"] = "min_max",
    combination: Literal["arithmetic_mean", "geometric_mean", "harmonic_mean"] = "arithmetic_mean",
    weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A search pipeline body with a normalization-processor for `hybrid` queries."""
    combo: dict[str, Any] = {"technique": combination}
    if weights is not None:
        combo["parameters"] = {"weights": [float(w) for w in weights]}
    return {
        "phase_results_processors": [
            {"normalization-processor": {"normalization": {"technique": technique}, "combination": combo}}
        ]
    }


def rrf_pipeline(rank_constant: int = 60) -> dict[str, Any]:
    """A search pipeline body fusing `hybrid` sub-queries by reciprocal rank (OpenSearch 2.19+). The rank
    constant goes in `combination.parameters`: neural-search 2.19 reads it there and silently uses 60 when
    it sits beside `technique`, the place the API spec documents (found on the real node)."""
    return {
        "phase_results_processors": [
            {"score-ranker-processor": {"combination": {"technique": "rrf", "parameters": {"rank_constant": int(rank_constant)}}}}
        ]
    }


def search_body(
    query: Query,
    *,
    size: int = 10,
    from_: int = 0,
    source_excludes: Sequence[str] | None = ("vector", "mentions.vector"),
    source_includes: Sequence[str] | None = None,
    min_score: float | None = None,
    collapse_field: str | None = None,
    search_pipeline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete `_search` body."""
    body: dict[str, Any] = {"size": size, "query": query}
    if from_:
        body["from"] = from_
    source: dict[str, Any] = {}
    if source_includes:
        source["includes"] = list(source_includes)
    if source_excludes:
        source["excludes"] = list(source_excludes)
    if source:
        body["_source"] = source
    if min_score is not None:
        body["min_score"] = min_score
    if collapse_field:
        body["collapse"] = {"field": collapse_field}
    if search_pipeline is not None:
        body["search_pipeline"] = search_pipeline
    return body
