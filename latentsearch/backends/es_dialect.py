"""Pure translation between the OpenSearch DSL latentsearch emits and Elasticsearch (8.12+ / 9.x).

latentsearch speaks OpenSearch everywhere; this module is the only place that knows Elasticsearch's
dialect, so it can be tested without a cluster. What changes on the way:

* mappings: `knn_vector` ↔ `dense_vector` (`latentsearch.mappings.builder` writes one way,
  `from_elasticsearch_mappings` reads the other way so `get_mapping` stays OpenSearch-shaped);
* the `knn` query: `{"knn": {FIELD: {vector, k, filter, min_score|max_distance, method_parameters}}}`
  becomes ES's `{"knn": {"field", "query_vector", "k", "num_candidates", "filter": [..], "similarity"}}`
  (a query since ES 8.12, with `k` since 8.15; also inside `nested`);
* radial search (`min_score` / `max_distance`) becomes ES's raw-similarity threshold, converted per
  metric because OpenSearch thresholds are on its score/distance scale and ES's are not;
* `hybrid` (OpenSearch neural-search) has no ES counterpart: it becomes an `rrf` retriever
  (ES ≥ 8.16) or a `linear` retriever with min-max normalisation (ES ≥ 8.18 / 9.0);
* responses: `hits.total` is always `{"value", "relation"}`, retriever bookkeeping is dropped.

Everything else (bool, term, terms, match, multi_match, range, exists, ids, match_all...) is the same
in both engines and passes through unchanged; compound queries are walked so a knn nested anywhere
is still translated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from latentsearch.backends.base import BackendError

HybridMode = Literal["rrf", "linear"]
SimilarityLookup = Callable[[str], "str | None"]

#: ES caps num_candidates (and therefore k) at this value.
MAX_NUM_CANDIDATES = 10_000

# OpenSearch space_type -> ES similarity (index time), and back for get_mapping.
OS_TO_ES_SIMILARITY = {"cosinesimil": "cosine", "l2": "l2_norm", "innerproduct": "max_inner_product"}
# dot_product is cosine on unit vectors and ES scores it exactly like OpenSearch cosinesimil.
ES_TO_OS_SPACE = {
    "cosine": "cosinesimil",
    "dot_product": "cosinesimil",
    "l2_norm": "l2",
    "max_inner_product": "innerproduct",
}

_KNN_KEYS = {"vector", "k", "filter", "min_score", "max_distance", "method_parameters", "boost", "_name"}
# Compound queries whose children are queries: key -> how the children are stored.
_CHILD_QUERY = {
    "constant_score": ("filter",),
    "boosting": ("positive", "negative"),
    "function_score": ("query",),
}


class DialectError(BackendError):
    """An OpenSearch construct that Elasticsearch cannot express; the message says what to do instead."""

    def __init__(self, message: str):
        super().__init__(message, status=400, error_type="unsupported_in_elasticsearch")


# ---------------------------------------------------------------- mappings


def create_index_body(opensearch_body: Mapping[str, Any]) -> dict[str, Any]:
    """The ES create-index body for an OpenSearch one (knn settings dropped, knn_vector → dense_vector)."""
    body = dict(opensearch_body)
    if "mappings" in body:
        return elasticsearch_index_body(body)
    settings = copy.deepcopy(body.get("settings", {}))
    index_settings = settings.get("index", {})
    for key in [k for k in index_settings if k == "knn" or k.startswith("knn.")]:
        index_settings.pop(key)
    return {"settings": settings} if settings else {}


def from_elasticsearch_mappings(mappings: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite `dense_vector` properties as OpenSearch `knn_vector` so callers see one mapping shape."""
    out = copy.deepcopy(dict(mappings))

    def walk(props: dict[str, Any]) -> None:
        for name, prop in list(props.items()):
            if prop.get("type") == "dense_vector":
                options = prop.get("index_options") or {}
                parameters = {k: options[k] for k in ("m", "ef_construction") if k in options}
                knn: dict[str, Any] = {"type": "knn_vector", "dimension": prop.get("dims")}
                knn["method"] = {
                    "name": "hnsw",
                    "space_type": ES_TO_OS_SPACE.get(prop.get("similarity", "cosine"), "cosinesimil"),
                    "engine": "lucene",
                    "parameters": parameters,
                }
                props[name] = knn
            elif isinstance(prop.get("properties"), dict):
                walk(prop["properties"])

    if isinstance(out.get("properties"), dict):
        walk(out["properties"])
    return out


def vector_similarities(es_mappings: Mapping[str, Any]) -> dict[str, str]:
    """`{"vector": "cosine", "mentions.vector": "cosine"}`: each dense_vector path and its ES similarity."""
    found: dict[str, str] = {}

    def walk(props: Mapping[str, Any], prefix: str) -> None:
        for name, prop in props.items():
            path = f"{prefix}{name}"
            if prop.get("type") == "dense_vector":
                # ES ≥ 8.11 defaults similarity to cosine when indexed and unset.
                found[path] = prop.get("similarity", "cosine")
            elif isinstance(prop.get("properties"), dict):
                walk(prop["properties"], path + ".")

    walk(es_mappings.get("properties", {}) or {}, "")
    return found


# ---------------------------------------------------------------- radial thresholds


def radial_similarity(
    es_similarity: str, *, min_score: float | None = None, max_distance: float | None = None
) -> float | None:
    """ES `similarity` threshold equivalent to an OpenSearch `min_score` / `max_distance`.

    OpenSearch thresholds live on its own scales (score: cosinesimil (1+cos)/2, l2 1/(1+d²),
    innerproduct ip+1 or 1/(1-ip); distance: cosinesimil 1-cos, l2 the *squared* Euclidean
    distance, innerproduct -ip). ES compares the raw similarity (cosine, dot product, or the plain
    Euclidean radius for l2_norm). Returns None when the threshold excludes nothing; raises when it
    can never match, because sending a threshold that silently returns nothing helps no one.
    """
    if (min_score is None) == (max_distance is None):
        raise ValueError("give exactly one of min_score, max_distance")
    sim = es_similarity
    if sim in ("cosine", "dot_product"):
        if min_score is not None:
            if min_score > 1:
                raise DialectError(
                    f"knn min_score {min_score} > 1 can never match a cosine field (scores are ≤ 1)"
                )
            return None if min_score <= 0 else 2 * min_score - 1
        assert max_distance is not None
        if max_distance < 0:
            raise DialectError(f"knn max_distance {max_distance} < 0 can never match a cosine field")
        return None if max_distance >= 2 else 1 - max_distance
    if sim == "l2_norm":
        if min_score is not None:
            if min_score > 1:
                raise DialectError(
                    f"knn min_score {min_score} > 1 can never match an l2 field (scores are ≤ 1)"
                )
            return None if min_score <= 0 else math.sqrt(1 / min_score - 1)
        assert max_distance is not None
        if max_distance < 0:
            raise DialectError(f"knn max_distance {max_distance} < 0 can never match an l2 field")
        return math.sqrt(max_distance)
    if sim == "max_inner_product":
        if min_score is not None:
            if min_score <= 0:
                return None
            return min_score - 1 if min_score >= 1 else 1 - 1 / min_score
        assert max_distance is not None
        return -max_distance
    raise DialectError(f"cannot translate a radial knn threshold for ES similarity `{sim}`")


# ---------------------------------------------------------------- queries


class QueryTranslator:
    """Walks an OpenSearch query and returns its Elasticsearch form.

    `similarity_of(field)` gives a vector field's ES similarity; it is only called for radial knn
    clauses, so the backend can look the mapping up lazily. `radial_candidates` bounds radial
    search: OpenSearch returns every vector within the radius, ES filters the top `num_candidates`.
    `emit_k=False` targets ES 8.12–8.14, whose knn query has no `k` (the request `size` is used).
    """

    def __init__(
        self,
        *,
        similarity_of: SimilarityLookup | Mapping[str, str] | None = None,
        radial_candidates: int = 1000,
        emit_k: bool = True,
    ) -> None:
        if isinstance(similarity_of, Mapping):
            table = dict(similarity_of)
            similarity_of = table.get
        self.similarity_of = similarity_of
        self.radial_candidates = min(int(radial_candidates), MAX_NUM_CANDIDATES)
        self.emit_k = emit_k

    def query(self, query: Mapping[str, Any], where: str = "query") -> dict[str, Any]:
        if not isinstance(query, Mapping) or len(query) != 1:
            raise DialectError(
                f"a query clause must be an object with exactly one key (in {where}), got {query!r}"
            )
        ((name, body),) = query.items()
        if name == "knn":
            return self.knn(body, where)
        if name == "hybrid":
            raise DialectError(
                f"`hybrid` is only allowed as the top-level query (found in {where}); "
                "it is translated to an Elasticsearch retriever there"
            )
        if name == "bool":
            out = dict(body)
            for key in ("must", "should", "filter", "must_not"):
                if key in body:
                    clauses = body[key]
                    if isinstance(clauses, Mapping):
                        out[key] = self.query(clauses, f"{where}.bool.{key}")
                    else:
                        out[key] = [self.query(c, f"{where}.bool.{key}[{i}]") for i, c in enumerate(clauses)]
            return {"bool": out}
        if name == "nested":
            out = dict(body)
            out["query"] = self.query(body["query"], f"{where}.nested")
            return {"nested": out}
        if name == "dis_max":
            out = dict(body)
            out["queries"] = [
                self.query(q, f"{where}.dis_max[{i}]") for i, q in enumerate(body.get("queries", []))
            ]
            return {"dis_max": out}
        if name in _CHILD_QUERY:
            out = dict(body)
            for key in _CHILD_QUERY[name]:
                if isinstance(body.get(key), Mapping):
                    out[key] = self.query(body[key], f"{where}.{name}.{key}")
            return {name: out}
        # Leaf queries (term, terms, match, multi_match, range, exists, ids, match_all, ...) are
        # spelled the same in both engines.
        return {name: copy.deepcopy(body)}

    def knn(self, body: Mapping[str, Any], where: str) -> dict[str, Any]:
        if not isinstance(body, Mapping) or len(body) != 1:
            raise DialectError(f"knn takes exactly one vector field (in {where}), got {list(body)}")
        ((field, spec),) = body.items()
        unknown = set(spec) - _KNN_KEYS
        if unknown:
            raise DialectError(
                f"knn option(s) {sorted(unknown)} on `{field}` have no Elasticsearch equivalent "
                f"(in {where}); "
                f"supported: {sorted(_KNN_KEYS)}"
            )
        if "vector" not in spec:
            raise DialectError(f"knn on `{field}` needs `vector` (in {where})")
        out: dict[str, Any] = {"field": field, "query_vector": [float(x) for x in spec["vector"]]}
        min_score, max_distance = spec.get("min_score"), spec.get("max_distance")
        ef_search = (spec.get("method_parameters") or {}).get("ef_search")
        extra_params = set(spec.get("method_parameters") or {}) - {"ef_search"}
        if extra_params:
            raise DialectError(
                f"knn method_parameters {sorted(extra_params)} have no Elasticsearch equivalent"
            )
        if min_score is not None or max_distance is not None:
            if spec.get("k") is not None:
                raise DialectError(f"knn on `{field}`: use exactly one of k, min_score, max_distance")
            es_sim = self.similarity_of(field) if self.similarity_of else None
            if es_sim is None:
                raise DialectError(
                    f"radial knn (min_score/max_distance) on `{field}` needs the field's similarity "
                    "to convert "
                    "the threshold, but it is not a dense_vector in the index mapping"
                )
            threshold = radial_similarity(es_sim, min_score=min_score, max_distance=max_distance)
            candidates = max(self.radial_candidates, int(ef_search or 0))
            candidates = min(candidates, MAX_NUM_CANDIDATES)
            if self.emit_k:
                out["k"] = candidates
            out["num_candidates"] = candidates
            if threshold is not None:
                out["similarity"] = threshold
        else:
            k = spec.get("k")
            if not isinstance(k, int) or k < 1:
                raise DialectError(
                    f"knn on `{field}` needs a positive integer k (or min_score / max_distance)"
                )
            if k > MAX_NUM_CANDIDATES:
                raise DialectError(f"knn k={k} exceeds Elasticsearch's limit of {MAX_NUM_CANDIDATES}")
            if ef_search:
                candidates = max(k, int(ef_search))
            else:
                candidates = max(k, math.ceil(1.5 * k))  # ES's own default, made explicit
            if self.emit_k:
                out["k"] = k
            out["num_candidates"] = min(candidates, MAX_NUM_CANDIDATES)
        if spec.get("filter"):
            out["filter"] = [self.query(spec["filter"], f"{where}.knn.filter")]
        for key in ("boost", "_name"):
            if key in spec:
                out[key] = spec[key]
        return {"knn": out}


# ---------------------------------------------------------------- search bodies


def _hybrid_retriever(
    hybrid: Mapping[str, Any],
    translator: QueryTranslator,
    *,
    mode: HybridMode,
    window: int,
    pipeline: Any,
    rank_constant: int,
) -> dict[str, Any]:
    queries = hybrid.get("queries") or []
    if not 1 <= len(queries) <= 5:
        raise DialectError("hybrid takes 1 to 5 sub-queries")
    extra = set(hybrid) - {"queries"}
    if extra:
        raise DialectError(f"hybrid option(s) {sorted(extra)} have no Elasticsearch equivalent")
    subs = [
        {"standard": {"query": translator.query(q, f"hybrid.queries[{i}]")}} for i, q in enumerate(queries)
    ]
    # an inline pipeline says how to fuse: its score-ranker-processor (RRF) or normalization-processor
    # (min-max/l2 + weights) wins over the client's default `mode`
    if isinstance(pipeline, Mapping):
        for proc in pipeline.get("phase_results_processors", []):
            if "score-ranker-processor" in proc:
                mode = "rrf"
                comb = proc["score-ranker-processor"].get("combination") or {}
                rank_constant = int((comb.get("parameters") or {}).get("rank_constant",
                                                                       comb.get("rank_constant", rank_constant)))
            elif "normalization-processor" in proc:
                mode = "linear"
    if mode == "rrf":
        # RRF fuses ranks, so OpenSearch's score normalisation (the search pipeline) has no role.
        return {"rrf": {"retrievers": subs, "rank_window_size": window, "rank_constant": rank_constant}}
    if mode != "linear":
        raise ValueError(f"unknown hybrid mode {mode!r}; choose rrf or linear")
    technique, weights = "min_max", None
    if pipeline is not None:
        if not isinstance(pipeline, Mapping):
            raise DialectError(
                f"search pipeline {pipeline!r} is a name; Elasticsearch has no search pipelines, so pass the "
                "pipeline body inline (query.dsl.normalization_pipeline) or use hybrid mode `rrf`"
            )
        processors = [p.get("normalization-processor") for p in pipeline.get("phase_results_processors", [])]
        processors = [p for p in processors if p]
        if processors:
            proc = processors[0]
            technique = (proc.get("normalization") or {}).get("technique", "min_max")
            combination = proc.get("combination") or {}
            if combination.get("technique", "arithmetic_mean") != "arithmetic_mean":
                raise DialectError(
                    f"combination `{combination.get('technique')}` cannot be expressed by ES's linear "
                    "retriever (a weighted sum, i.e. arithmetic_mean up to a constant); use "
                    "arithmetic_mean or hybrid mode rrf"
                )
            weights = (combination.get("parameters") or {}).get("weights")
    normalizer = {"min_max": "minmax", "l2": "l2_norm"}.get(technique)
    if normalizer is None:
        raise DialectError(
            f"normalization technique `{technique}` has no Elasticsearch linear-retriever normalizer"
        )
    if weights is not None and len(weights) != len(subs):
        raise DialectError(f"{len(weights)} hybrid weights for {len(subs)} sub-queries")
    entries = [
        {"retriever": sub, "weight": float(weights[i]) if weights else 1.0, "normalizer": normalizer}
        for i, sub in enumerate(subs)
    ]
    return {"linear": {"retrievers": entries, "rank_window_size": window}}


def translate_search_body(
    body: Mapping[str, Any],
    *,
    params: Mapping[str, Any] | None = None,
    translator: QueryTranslator | None = None,
    hybrid: HybridMode = "rrf",
    rank_constant: int = 60,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ES search body, ES query params) for an OpenSearch `_search` body and its query params.

    `search_pipeline` (OpenSearch only) is consumed by a top-level `hybrid`; anywhere else it is an
    error, because dropping a pipeline silently would change results."""
    translator = translator or QueryTranslator()
    out = copy.deepcopy(dict(body))
    es_params = dict(params or {})
    pipeline = out.pop("search_pipeline", None)
    named_pipeline = es_params.pop("search_pipeline", None)
    if named_pipeline is not None and pipeline is None:
        pipeline = named_pipeline
    query = out.get("query")
    if isinstance(query, Mapping) and set(query) == {"hybrid"}:
        if "min_score" in out:
            raise DialectError(
                "min_score cannot be combined with a hybrid query on Elasticsearch (retrievers forbid it)"
            )
        size = int(out.get("size", 10))
        window = max(size + int(out.get("from", 0)), 10)
        out.pop("query")
        out["retriever"] = _hybrid_retriever(
            query["hybrid"],
            translator,
            mode=hybrid,
            window=window,
            pipeline=pipeline,
            rank_constant=rank_constant,
        )
        return out, es_params
    if pipeline is not None:
        raise DialectError(
            "Elasticsearch has no search pipelines; `search_pipeline` is only translated together with a "
            "top-level hybrid query (to an RRF / linear retriever). Remove it for this query."
        )
    if query is not None:
        out["query"] = translator.query(query)
    if isinstance(out.get("post_filter"), Mapping):
        out["post_filter"] = translator.query(out["post_filter"], "post_filter")
    return out, es_params


# ---------------------------------------------------------------- responses


def translate_search_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """An ES `_search` response in OpenSearch shape (total as {value, relation}, no `_rank`)."""
    out = dict(response)
    out.setdefault("took", 0)
    out.setdefault("timed_out", False)
    hits = dict(out.get("hits") or {})
    total = hits.get("total")
    if isinstance(total, int):
        hits["total"] = {"value": total, "relation": "eq"}
    hits.setdefault("max_score", None)
    hits["hits"] = [{k: v for k, v in hit.items() if k != "_rank"} for hit in hits.get("hits", [])]
    out["hits"] = hits
    return out


# ---------------------------------------------------------------- mappings


_ES_SIMILARITY = {"cosinesimil": "cosine", "l2": "l2_norm", "innerproduct": "max_inner_product"}


def to_elasticsearch_mappings(mappings: dict[str, Any]) -> dict[str, Any]:
    """Rewrite OpenSearch `knn_vector` properties into Elasticsearch `dense_vector` ones."""
    out = copy.deepcopy(mappings)

    def walk(props: dict[str, Any]) -> None:
        for name, prop in list(props.items()):
            if prop.get("type") == "knn_vector":
                method = prop.get("method", {})
                params = method.get("parameters", {})
                props[name] = {
                    "type": "dense_vector",
                    "dims": prop["dimension"],
                    "index": True,
                    "similarity": _ES_SIMILARITY[method.get("space_type", "cosinesimil")],
                    "index_options": {
                        "type": "hnsw",
                        "m": params.get("m", 16),
                        "ef_construction": params.get("ef_construction", 100),
                    },
                }
            elif "properties" in prop:
                walk(prop["properties"])

    walk(out.get("properties", {}))
    return out


def elasticsearch_index_body(opensearch_body: dict[str, Any]) -> dict[str, Any]:
    """The Elasticsearch create-index body equivalent to an OpenSearch one."""
    settings = copy.deepcopy(opensearch_body.get("settings", {}))
    index_settings = settings.get("index", {})
    for key in [k for k in index_settings if k == "knn" or k.startswith("knn.")]:
        index_settings.pop(key)
    return {"settings": settings, "mappings": to_elasticsearch_mappings(opensearch_body["mappings"])}
