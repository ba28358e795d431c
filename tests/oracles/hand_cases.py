"""Hand-evaluated cases: tiny indices whose answers were worked out by hand from OpenSearch's
documented semantics (Lucene's `Queries.calculateMinShouldMatch`, the standard analyzer, nested
documents, `exists`). They establish that osmem-server is a usable oracle before it is trusted
on generated queries, and they pin the same answers on the embedded engine.

Nothing here imports latentsearch.
"""

from __future__ import annotations

from typing import Any


def _vec_mapping(dimension: int) -> dict[str, Any]:
    return {"type": "knn_vector", "dimension": dimension}


# ----------------------------------------------------------------- minimum_should_match ladder
# Document m<k> carries tags t0 .. t<k-1> (m0 has an empty array), so a bool whose should
# clauses are `term tags: t0 .. t<n-1>` is matched by m<k> on exactly min(k, n) clauses.
MSM_INDEX = "hand_msm"
MSM_INDEX_BODY: dict[str, Any] = {
    "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0, "knn": True}},
    "mappings": {
        "properties": {
            "doc_id": {"type": "keyword"},
            "tags": {"type": "keyword"},
            "vector": _vec_mapping(2),
        }
    },
}
MSM_DOCS: list[dict[str, Any]] = [
    {"doc_id": f"m{k}", "tags": [f"t{i}" for i in range(k)], "vector": [1.0, float(k)]} for k in range(11)
]
ALL_M = {f"m{k}" for k in range(11)}


def at_least(k: int) -> set[str]:
    """Documents matching >= k of the ladder's should clauses (k <= n)."""
    return {f"m{j}" for j in range(k, 11)}


def ladder(n: int, msm: Any = None, **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"should": [{"term": {"tags": f"t{i}"}} for i in range(n)], **extra}
    if msm is not None:
        b["minimum_should_match"] = msm
    return {"bool": b}


# (name, query, expected ids, the hand computation)
MSM_CASES: list[tuple[str, dict[str, Any], set[str], str]] = [
    ("3<90%-of-4", ladder(4, "3<90%"), at_least(3), "4 > 3 so 90% of 4 = 3.6 -> 3"),
    ("3<90%-of-3", ladder(3, "3<90%"), at_least(3), "3 <= 3: all 3 required"),
    ("3<90%-of-2", ladder(2, "3<90%"), at_least(2), "2 <= 3: all 2 required"),
    ("3<90%-of-10", ladder(10, "3<90%"), at_least(9), "90% of 10 = 9"),
    ("-1-of-4", ladder(4, -1), at_least(3), "4 - 1 = 3"),
    ("'-1'-of-4", ladder(4, "-1"), at_least(3), "string form, 4 - 1 = 3"),
    ("75%-of-4", ladder(4, "75%"), at_least(3), "75% of 4 = 3"),
    ("75%-of-5", ladder(5, "75%"), at_least(3), "75% of 5 = 3.75 -> 3 (rounds down)"),
    ("-25%-of-5", ladder(5, "-25%"), at_least(4), "5 - floor(1.25) = 4"),
    ("-25%-of-7", ladder(7, "-25%"), at_least(6), "7 - floor(1.75) = 6"),
    ("67%-of-3", ladder(3, "67%"), at_least(2), "floor(2.01) = 2"),
    ("66%-of-3", ladder(3, "66%"), at_least(1), "floor(1.98) = 1"),
    ("2<-25%_9<-3-of-10", ladder(10, "2<-25% 9<-3"), at_least(7), "10 > 9: 10 - 3 = 7"),
    ("2<-25%_9<-3-of-9", ladder(9, "2<-25% 9<-3"), at_least(7), "2 < 9 <= 9: 9 - floor(2.25) = 7"),
    ("2<-25%_9<-3-of-2", ladder(2, "2<-25% 9<-3"), at_least(2), "2 <= 2: all required"),
    ("1<-1-of-10", ladder(10, "1<-1"), at_least(9), "10 > 1: 10 - 1 = 9"),
    ("1<-1-of-1", ladder(1, "1<-1"), at_least(1), "1 <= 1: all (1) required"),
    ("-25%-of-3", ladder(3, "-25%"), at_least(3), "25% of 3 = 0.75 -> 0 may be missing: all 3"),
    ("-34%-of-2", ladder(2, "-34%"), at_least(2), "34% of 2 = 0.68 -> 0 may be missing: both"),
    ("-10%-of-9", ladder(9, "-10%"), at_least(9), "10% of 9 = 0.9 -> 0 may be missing: all 9"),
    ("2<-25%_9<-3-of-3", ladder(3, "2<-25% 9<-3"), at_least(3), "3 > 2: 3 - floor(0.75) = 3"),
    ("3_<_90%-spaces-of-4", ladder(4, " 3 < 90% "), at_least(3), "spaces around '<' are allowed"),
    ("5-of-4", ladder(4, 5), set(), "more than the clause count: nothing matches"),
    ("4-of-4", ladder(4, 4), at_least(4), "all 4"),
    ("0-pure-should", ladder(4, 0), at_least(1), "0: no constraint; a should-only bool still needs 1"),
    ("10%-of-4", ladder(4, "10%"), at_least(1), "floor(0.4) = 0 -> no constraint -> 1"),
    ("-5-of-4", ladder(4, -5), at_least(1), "4 - 5 < 0 -> 0 -> 1"),
    ("100%-of-4", ladder(4, "100%"), at_least(4), "all 4"),
    ("-100%-of-4", ladder(4, "-100%"), at_least(1), "4 - 4 = 0 -> 1"),
    ("must+should-no-msm", ladder(4, must=[{"match_all": {}}]), ALL_M, "should optional next to must"),
    ("must+should-msm-2", ladder(4, 2, must=[{"match_all": {}}]), at_least(2), "explicit 2"),
    ("filter+should-no-msm", ladder(2, filter=[{"exists": {"field": "tags"}}]), at_least(1), "filter only"),
    (
        "filter-context-should-only",
        {"bool": {"filter": [ladder(4)]}},
        at_least(1),
        "a should-only bool needs 1 clause in filter context too",
    ),
    (
        "must_not+should",
        ladder(3, must_not=[{"term": {"tags": "t5"}}]),
        {"m1", "m2", "m3", "m4", "m5"},
        "no must/filter: >= 1 should, and not t5 (k <= 5)",
    ),
    (
        "msm-without-should",
        {"bool": {"must": [{"match_all": {}}], "minimum_should_match": 1}},
        set(),
        "msm 1 with 0 should clauses: Lucene matches nothing",
    ),
    (
        "msm-percent-without-should",
        {"bool": {"filter": [{"term": {"tags": "t8"}}], "minimum_should_match": "75%"}},
        {"m9", "m10"},
        "75% of 0 clauses = 0: no constraint",
    ),
    (
        "single-clause-not-a-list",
        {"bool": {"must": {"term": {"tags": "t8"}}, "should": {"term": {"tags": "t9"}}}},
        {"m9", "m10"},
        "clauses may be a single object",
    ),
]

# ------------------------------------------------------------------------------- behaviour
BEHAVIOUR_INDEX = "hand_behaviour"
BEHAVIOUR_INDEX_BODY: dict[str, Any] = {
    "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0, "knn": True}},
    "mappings": {
        "properties": {
            "doc_id": {"type": "keyword"},
            "n": {"type": "integer"},
            "f": {"type": "float"},
            "b": {"type": "boolean"},
            "text": {"type": "text"},
            "title": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "vector": _vec_mapping(2),
            "latent": {"properties": {"disease": {"type": "keyword"}, "chemical": {"type": "keyword"}}},
            "mentions": {
                "type": "nested",
                "properties": {"text": {"type": "keyword"}, "start": {"type": "integer"}, "type": {"type": "keyword"}},
            },
        }
    },
}
BEHAVIOUR_DOCS: list[dict[str, Any]] = [
    {
        "doc_id": "b1", "n": 1, "f": 0.5, "b": True, "text": "the cell and the cells", "title": "Big Cell",
        "vector": [1.0, 0.0], "latent": {"disease": ["a", "b", "c"]},
        "mentions": [{"text": "x", "start": 1, "type": "disease"}, {"text": "y", "start": 5, "type": "chemical"}],
    },
    {
        "doc_id": "b2", "n": 5, "f": 1.5, "b": False, "text": "cells grow fast", "title": "cell growth",
        "vector": [0.0, 1.0], "latent": {"disease": ["a", "b"], "chemical": []},
        "mentions": [{"text": "x", "start": 9, "type": "chemical"}],
    },
    {
        "doc_id": "b3", "n": -3, "f": 2.5, "text": "of mice and men", "title": "Mice",
        "vector": [1.0, 1.0], "latent": {"disease": ["a"]}, "mentions": [],
    },
    {"doc_id": "b4", "b": True, "latent": {"disease": []}, "text": "", "vector": [0.5, 0.5]},
    {"doc_id": "b5", "vector": [0.2, 0.1], "mentions": [{"text": "z", "start": 0, "type": "organism"}]},
]  # fmt: skip
ALL_B = {"b1", "b2", "b3", "b4", "b5"}

BEHAVIOUR_CASES: list[tuple[str, dict[str, Any], set[str], str]] = [
    ("match-stopword", {"match": {"text": "the"}}, {"b1"}, "standard analyzer keeps stop words"),
    ("match-no-stemming", {"match": {"text": "cell"}}, {"b1"}, "'cells' in b2 is not 'cell'"),
    ("match-lowercases-query", {"match": {"text": "CELLS"}}, {"b1", "b2"}, "query analyzed too"),
    ("match-and", {"match": {"text": {"query": "cells grow", "operator": "and"}}}, {"b2"}, "both terms"),
    (
        "match-msm-2",
        {"match": {"text": {"query": "cells grow mice", "minimum_should_match": 2}}},
        {"b2"},
        "b1: cells; b2: cells grow; b3: mice",
    ),
    (
        "match-msm--1",
        {"match": {"text": {"query": "cells grow mice", "minimum_should_match": "-1"}}},
        {"b2"},
        "3 - 1 = 2",
    ),
    ("keyword-exact", {"term": {"title.keyword": "Big Cell"}}, {"b1"}, "exact value"),
    ("keyword-case", {"term": {"title.keyword": "big cell"}}, set(), "keywords are not lowercased"),
    ("term-on-analyzed-title", {"term": {"title": "cell"}}, {"b1", "b2"}, "tokens big/cell, cell/growth"),
    (
        "multi_match-and-is-per-field",
        {"multi_match": {"query": "cell grow", "fields": ["title", "text"], "operator": "and"}},
        set(),
        "best_fields: both terms in one field; 'growth' != 'grow', 'cells' != 'cell'",
    ),
    (
        "multi_match-or",
        {"multi_match": {"query": "cell mice", "fields": ["title", "text"], "type": "best_fields"}},
        {"b1", "b2", "b3"},
        "any term in any field",
    ),
    ("term-bool-true", {"term": {"b": True}}, {"b1", "b4"}, ""),
    ("term-bool-string", {"term": {"b": "true"}}, {"b1", "b4"}, "'true' parses as boolean"),
    ("term-bool-false", {"term": {"b": False}}, {"b2"}, "missing is not false"),
    ("term-int-string", {"term": {"n": "5"}}, {"b2"}, "'5' parses as integer"),
    ("terms-int", {"terms": {"n": [1, -3]}}, {"b1", "b3"}, ""),
    ("range-float", {"range": {"f": {"gt": 0.5, "lte": 2.5}}}, {"b2", "b3"}, "(0.5, 2.5]"),
    ("range-int", {"range": {"n": {"gte": -3, "lt": 5}}}, {"b1", "b3"}, "[-3, 5)"),
    ("range-int-fractional", {"range": {"n": {"gte": 1.5}}}, {"b2"}, "integer field: gte 1.5 -> gte 2"),
    ("match-operator-uppercase", {"match": {"text": {"query": "cells grow", "operator": "AND"}}}, {"b2"}, ""),
    ("match-on-keyword-field", {"match": {"title.keyword": "Big Cell"}}, {"b1"}, "keyword: whole value"),
    ("match-on-keyword-field-partial", {"match": {"title.keyword": "Big"}}, set(), "keyword: not tokenized"),
    ("range-string-bound", {"range": {"f": {"gte": "1.5"}}}, {"b2", "b3"}, "numeric strings parse"),
    ("term-with-boost", {"term": {"latent.disease": {"value": "b", "boost": 2.0}}}, {"b1", "b2"}, ""),
    ("exists-keyword-array", {"exists": {"field": "latent.disease"}}, {"b1", "b2", "b3"}, "[] does not exist"),
    ("exists-empty-array-only", {"exists": {"field": "latent.chemical"}}, set(), "only [] values"),
    ("exists-empty-string", {"exists": {"field": "text"}}, {"b1", "b2", "b3", "b4"}, "'' exists"),
    ("exists-object", {"exists": {"field": "latent"}}, {"b1", "b2", "b3"}, "any sub-field with a value"),
    ("exists-bool", {"exists": {"field": "b"}}, {"b1", "b2", "b4"}, ""),
    ("ids", {"ids": {"values": ["b1", "b3", "b9"]}}, {"b1", "b3"}, "unknown id ignored"),
    ("match_all", {"match_all": {}}, ALL_B, ""),
    ("match_none", {"match_none": {}}, set(), ""),
    ("empty-bool", {"bool": {}}, ALL_B, "empty bool = match_all"),
    ("pure-must_not", {"bool": {"must_not": [{"term": {"latent.disease": "a"}}]}}, {"b4", "b5"}, ""),
    ("terms-empty", {"terms": {"latent.disease": []}}, set(), ""),
    (
        "nested-same-mention",
        {
            "nested": {
                "path": "mentions",
                "query": {"bool": {"must": [{"term": {"mentions.text": "x"}}, {"term": {"mentions.type": "chemical"}}]}},
            }
        },
        {"b2"},
        "b1 has x (disease) and y (chemical) on different mentions",
    ),
    (
        "nested-range-same-mention",
        {
            "nested": {
                "path": "mentions",
                "query": {"bool": {"must": [{"term": {"mentions.text": "x"}}, {"range": {"mentions.start": {"gte": 5}}}]}},
            }
        },
        {"b2"},
        "b1's x starts at 1",
    ),
    (
        "nested-must_not-inside",
        {"nested": {"path": "mentions", "query": {"bool": {"must_not": [{"term": {"mentions.text": "x"}}]}}}},
        {"b1", "b5"},
        "some mention is not x",
    ),
    (
        "must_not-nested",
        {"bool": {"must_not": [{"nested": {"path": "mentions", "query": {"term": {"mentions.text": "x"}}}}]}},
        {"b3", "b4", "b5"},
        "no mention is x",
    ),
    ("nested-match_all", {"nested": {"path": "mentions", "query": {"match_all": {}}}}, {"b1", "b2", "b5"}, ""),
    (
        "filter-should-only",
        {"bool": {"filter": [{"bool": {"should": [{"term": {"n": 1}}, {"term": {"n": 5}}]}}]}},
        {"b1", "b2"},
        "",
    ),
    (
        "filter+should",
        {"bool": {"filter": [{"exists": {"field": "latent.disease"}}], "should": [{"term": {"n": 1}}]}},
        {"b1", "b2", "b3"},
        "should optional next to filter",
    ),
    (
        "must_not+should",
        {"bool": {"must_not": [{"term": {"n": 1}}], "should": [{"term": {"n": 1}}, {"term": {"n": 5}}]}},
        {"b2"},
        "",
    ),
    # unmapped fields (issue 19): OpenSearch answers 0 hits, no error, for leaf queries on them
    ("unmapped-term", {"term": {"latent.gene": "x"}}, set(), "latent.gene is not mapped"),
    ("unmapped-range", {"range": {"pages": {"gte": 1}}}, set(), "pages is not mapped"),
    ("unmapped-match", {"match": {"abstract": "cell"}}, set(), "abstract is not mapped"),
    (
        "unmapped-in-should",
        {"bool": {"should": [{"term": {"colour": "red"}}, {"term": {"doc_id": "b1"}}], "minimum_should_match": 1}},
        {"b1"},
        "the unmapped clause matches nothing, the other still counts",
    ),
    ("unmapped-must_not", {"bool": {"must_not": [{"terms": {"colour": ["red"]}}]}}, ALL_B, "excludes nothing"),
]

# Hand cases on which osmem-server disagrees with the hand evaluation (name -> note). They are
# still run against the embedded engine, but not used to judge osmem. None found (osmem 0.1.6).
OSMEM_DISAGREES: dict[str, str] = {}
