"""Evaluate the OpenSearch DSL subset over a snapshot: every clause yields (mask, score) over rows.

Matching follows OpenSearch/Lucene semantics (the differential tests against osmem-server check
hit sets); scoring follows them where it matters for ranking: k-NN scores use the k-NN plugin's
per-space formulas, `match` uses BM25, filters score 0, other leaves score their boost.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.backends.base import BackendError, UnsupportedQueryError
from latentsearch.backends.embedded.analysis import ANALYZERS, analyze
from latentsearch.backends.embedded.layout import FieldSpec, MapperParsingError, parse_date
from latentsearch.backends.embedded.snapshot import ListColumn, Snapshot, VectorColumn
from latentsearch.dsl import resolve_msm

# (field path, query vector, candidate count wanted, ef_search) -> rows or None (no ANN index)
AnnSearch = Callable[[str, np.ndarray, int, int | None], np.ndarray | None]

SUPPORTED_BODY_KEYS = {
    "query", "size", "from", "_source", "min_score", "track_total_hits", "collapse",
    "search_pipeline", "timeout", "explain", "version", "seq_no_primary_term", "aggs", "aggregations",
}
EXACT_SEARCH_MAX_CANDIDATES = 20_000


class UnmappedFieldError(BackendError):
    """A query names a field the index does not map. Leaf queries (term, terms, range, match) turn it into
    0 hits, as OpenSearch does; k-NN and aggregations still raise it (OpenSearch rejects those too)."""


@dataclass
class Match:
    mask: np.ndarray
    score: np.ndarray
    # hits.total when it is not mask.sum(): a hybrid query returns only each sub-query's top hits but counts
    # every document any sub-query matched
    total: int | None = None


@dataclass
class NestedScope:
    path: str
    fields: dict[str, FieldSpec]
    snapshot: Snapshot


@dataclass
class InnerHitsRequest:
    name: str
    path: str
    child_mask: np.ndarray
    child_score: np.ndarray
    options: dict[str, Any]


@dataclass
class Context:
    fields: dict[str, FieldSpec]
    snapshot: Snapshot
    index: str
    nested: dict[str, NestedScope] = field(default_factory=dict)
    scoring: bool = True
    parent: Context | None = None  # set inside a nested scope
    scope: NestedScope | None = None
    ann: AnnSearch | None = None
    inner_hits: list[InnerHitsRequest] = field(default_factory=list)
    exact_max_candidates: int = EXACT_SEARCH_MAX_CANDIDATES

    @property
    def n(self) -> int:
        return self.snapshot.n_rows

    def filter_context(self) -> Context:
        if not self.scoring:
            return self
        return Context(self.fields, self.snapshot, self.index, self.nested, False, self.parent, self.scope,
                       self.ann, self.inner_hits, self.exact_max_candidates)

    def field(self, path: str, where: str) -> FieldSpec:
        spec = self.fields.get(path)
        if spec is not None:
            return spec
        for scope in self.nested.values():
            if path in scope.fields:
                raise BackendError(
                    f"field `{path}` (in {where}) lives in nested `{scope.path}`: wrap the clause in "
                    f'{{"nested": {{"path": "{scope.path}", "query": ...}}}}'
                )
        known = ", ".join(sorted(self.fields)) or "(none)"
        raise UnmappedFieldError(
            f"field `{path}` (in {where}) is not mapped in index `{self.index}`; the embedded backend "
            f"queries mapped fields only. Mapped fields: {known}"
        )

    def all_rows(self, value: float = 1.0) -> Match:
        return Match(np.ones(self.n, dtype=bool), np.full(self.n, value))

    def no_rows(self) -> Match:
        return Match(np.zeros(self.n, dtype=bool), np.zeros(self.n))

    def const(self, mask: np.ndarray, boost: float = 1.0) -> Match:
        return Match(mask, np.where(mask, boost, 0.0))


def _one_clause(query: Any, where: str) -> tuple[str, Any]:
    if not isinstance(query, dict) or len(query) != 1:
        raise BackendError(f"a query clause must be an object with exactly one key (in {where}), got {query!r:.200}")
    return next(iter(query.items()))


def _field_and_body(clause: str, body: Any, value_key: str) -> tuple[str, dict[str, Any]]:
    """`{"title": "x"}` and `{"title": {"query": "x", ...}}` → ("title", {...})."""
    if not isinstance(body, dict):
        raise BackendError(f"`{clause}` expects an object, got {body!r:.100}")
    options = {k: v for k, v in body.items() if k in {"boost", "_name"}}
    fields = [k for k in body if k not in options]
    if len(fields) != 1:
        raise BackendError(f"`{clause}` expects exactly one field, got {fields}")
    fname = fields[0]
    value = body[fname]
    if isinstance(value, dict):
        return fname, {**options, **value}
    return fname, {**options, value_key: value}


# ---------------------------------------------------------------- leaf helpers


def _parse_value(spec: FieldSpec, value: Any, clause: str) -> Any:
    try:
        if spec.kind == "int" or spec.kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if spec.kind == "bool":
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):
                return value == "true"
            raise ValueError
        if spec.kind == "date":
            return parse_date(value, spec.path)
    except (TypeError, ValueError, MapperParsingError):
        raise BackendError(
            f"`{clause}` on {spec.type} field `{spec.path}` cannot use value {value!r}", error_type="query_shard_exception"
        ) from None
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)


def _term_mask(col: ListColumn, values: list[Any], clause: str, case_insensitive: bool = False) -> np.ndarray:
    spec = col.spec
    if spec.analyzed:
        inv = col.inverted
        rows = [inv.term_rows(str(v))[0] for v in values]
        mask = np.zeros(col.n_rows, dtype=bool)
        for r in rows:
            mask[r] = True
        return mask
    if spec.kind == "str":
        strings = [_parse_value(spec, v, clause) for v in values]
        if case_insensitive:
            _, groups = col.lower_codes
            codes = [c for s in strings for c in groups.get(s.lower(), [])]
        else:
            codes = [col.code_of[s] for s in strings if s in col.code_of]
        if not codes:
            return np.zeros(col.n_rows, dtype=bool)
        return col.any_row(np.isin(col.values, codes))
    parsed = [_parse_value(spec, v, clause) for v in values]
    return col.any_row(np.isin(col.values, parsed))


def _range_mask(col: ListColumn, body: dict[str, Any]) -> np.ndarray:
    spec = col.spec
    bounds = {k: body[k] for k in ("gt", "gte", "lt", "lte") if body.get(k) is not None}
    unknown = set(body) - {"gt", "gte", "lt", "lte", "boost", "_name", "format", "relation", "time_zone"}
    if unknown:
        raise UnsupportedQueryError(f"range.{sorted(unknown)[0]}", hint="use gt/gte/lt/lte")
    if spec.kind == "str":
        vocab = np.asarray(col.vocab or [], dtype=object)
        ok = np.ones(len(vocab), dtype=bool)
        for op, bound in bounds.items():
            b = str(bound)
            ok &= np.array([_cmp(op, s, b) for s in vocab], dtype=bool) if len(vocab) else ok
        return col.any_row(np.isin(col.values, np.flatnonzero(ok)))
    values = col.values.astype(np.float64) if spec.kind != "bool" else col.values
    element = np.ones(values.shape[0], dtype=bool)
    for op, bound in bounds.items():
        b = _parse_value(spec, bound, "range")
        element &= _cmp(op, values, b)
    return col.any_row(element)


def _cmp(op: str, a: Any, b: Any) -> Any:
    if op == "gt":
        return a > b
    if op == "gte":
        return a >= b
    if op == "lt":
        return a < b
    return a <= b


# ---------------------------------------------------------------- k-NN


def knn_scores(space: str, col: VectorColumn, q: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, OpenSearch score) of `rows` against q, per the k-NN plugin's space table."""
    m = col.matrix[rows]
    if space == "cosinesimil":
        qn = q / (np.linalg.norm(q) or 1.0)
        cos = col.unit[rows] @ qn
        d = 1.0 - cos
        return d, (2.0 - d) / 2.0
    if space == "l2":
        d = np.sum((m - q) ** 2, axis=1)
        return d, 1.0 / (1.0 + d)
    if space == "l1":
        d = np.sum(np.abs(m - q), axis=1)
        return d, 1.0 / (1.0 + d)
    if space == "linf":
        d = np.max(np.abs(m - q), axis=1)
        return d, 1.0 / (1.0 + d)
    ip = m @ q
    d = -ip
    return d, np.where(d >= 0, 1.0 / (1.0 + d), -d + 1.0)


_KNN_KEYS = {"vector", "k", "filter", "min_score", "max_distance", "method_parameters", "boost", "_name",
             "expand_nested_docs", "rescore"}


def eval_knn(body: Any, ctx: Context) -> Match:
    fname, params = _field_and_body("knn", body, "vector")
    unknown = set(params) - _KNN_KEYS
    if unknown:
        raise UnsupportedQueryError(f"knn.{sorted(unknown)[0]}")
    spec = ctx.field(fname, "knn")
    if spec.kind != "vector":
        raise BackendError(f"knn field `{fname}` is a {spec.type}, not a knn_vector", error_type="query_shard_exception")
    try:
        q = np.asarray(params["vector"], dtype=np.float32)
    except (KeyError, TypeError, ValueError):
        raise BackendError("knn needs `vector`: an array of numbers") from None
    if q.shape != (spec.dimension,):
        raise BackendError(
            f"query vector has dimension {q.size}, field `{fname}` has {spec.dimension}", error_type="query_shard_exception"
        )
    k = params.get("k")
    min_score = params.get("min_score")
    max_distance = params.get("max_distance")
    if sum(x is not None for x in (k, min_score, max_distance)) != 1:
        raise BackendError("knn takes exactly one of `k`, `min_score`, `max_distance`")
    if k is not None and (not isinstance(k, int) or k <= 0):
        raise BackendError(f"knn `k` must be a positive integer, got {k!r}")
    boost = float(params.get("boost", 1.0))
    col = ctx.snapshot.vectors[fname]
    in_nested = ctx.scope is not None

    # candidates: rows with a vector that pass the filter (efficient filtering: filter first)
    candidates = col.present.copy()
    if params.get("filter"):
        if in_nested:
            parent_ctx = ctx.parent.filter_context()
            parent_mask = evaluate(params["filter"], parent_ctx).mask
            prow = ctx.snapshot.parent_rows
            candidates &= (prow >= 0) & parent_mask[np.clip(prow, 0, None)]
        else:
            candidates &= evaluate(params["filter"], ctx.filter_context()).mask
    cand_rows = np.flatnonzero(candidates)
    if cand_rows.size == 0:
        return ctx.no_rows()

    if k is not None and not in_nested and ctx.ann is not None and cand_rows.size > ctx.exact_max_candidates:
        ef = (params.get("method_parameters") or {}).get("ef_search")
        # ask the ANN index for more than k when a filter removes part of the space
        share = cand_rows.size / max(ctx.n, 1)
        want = min(ctx.n, int(math.ceil(k / max(share, 1e-6) * 1.5)) + k)
        rows = ctx.ann(fname, q, want, ef)
        if rows is not None:
            rows = rows[candidates[rows]]
            if rows.size >= min(k, cand_rows.size):
                cand_rows = rows  # score only what the index proposed

    dist, score = knn_scores(spec.space_type, col, q, cand_rows)
    if min_score is not None:
        keep = score >= float(min_score)
    elif max_distance is not None:
        keep = dist <= float(max_distance)
    else:
        keep = None
    mask = np.zeros(ctx.n, dtype=bool)
    scores = np.zeros(ctx.n)
    if keep is not None:
        sel = cand_rows[keep]
        mask[sel] = True
        scores[sel] = score[keep] * boost
        return Match(mask, scores)

    if in_nested:
        # nested k-NN: k counts parent documents; each parent is represented by its best child
        prow = ctx.snapshot.parent_rows[cand_rows]
        order = np.lexsort((cand_rows, -score))
        seen: set[int] = set()
        best_parents: list[int] = []
        best_child_pos: list[int] = []
        for pos in order:
            p = int(prow[pos])
            if p < 0 or p in seen:
                continue
            seen.add(p)
            best_parents.append(p)
            best_child_pos.append(pos)
            if len(best_parents) >= k:
                break
        if params.get("expand_nested_docs"):
            chosen = np.isin(prow, np.asarray(best_parents, dtype=np.int64))
            sel_pos = np.flatnonzero(chosen)
        else:
            sel_pos = np.asarray(best_child_pos, dtype=np.int64)
        sel = cand_rows[sel_pos]
        mask[sel] = True
        scores[sel] = score[sel_pos] * boost
        return Match(mask, scores)

    top = np.lexsort((cand_rows, -score))[:k]
    sel = cand_rows[top]
    mask[sel] = True
    scores[sel] = score[top] * boost
    return Match(mask, scores)


# ---------------------------------------------------------------- clauses


def eval_term(body: Any, ctx: Context) -> Match:
    fname, params = _field_and_body("term", body, "value")
    if "value" not in params:
        raise BackendError("term needs a `value`")
    col = ctx.snapshot.columns.get(fname) or _col(ctx, fname, "term")
    mask = _term_mask(col, [params["value"]], "term", bool(params.get("case_insensitive")))
    return ctx.const(mask, float(params.get("boost", 1.0)))


def _col(ctx: Context, fname: str, where: str) -> ListColumn:
    spec = ctx.field(fname, where)
    if spec.kind == "vector":
        raise BackendError(f"`{where}` cannot query knn_vector field `{fname}`; use knn")
    return ctx.snapshot.columns[fname]


def eval_terms(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict):
        raise BackendError("terms expects an object")
    boost = float(body.get("boost", 1.0))
    fields = [k for k in body if k not in {"boost", "_name"}]
    if len(fields) != 1:
        raise BackendError(f"terms expects exactly one field, got {fields}")
    values = body[fields[0]]
    if isinstance(values, dict):
        raise UnsupportedQueryError("terms lookup", hint="pass the values inline as an array")
    if not isinstance(values, list):
        raise BackendError("terms expects an array of values")
    col = _col(ctx, fields[0], "terms")
    return ctx.const(_term_mask(col, values, "terms"), boost)


def eval_range(body: Any, ctx: Context) -> Match:
    fname, params = _field_and_body("range", body, "gte")
    col = _col(ctx, fname, "range")
    return ctx.const(_range_mask(col, params), float(params.get("boost", 1.0)))


def eval_exists(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict) or "field" not in body:
        raise BackendError("exists needs `field`")
    path = body["field"]
    boost = float(body.get("boost", 1.0))
    if path in ctx.fields:
        if ctx.fields[path].kind == "vector":
            return ctx.const(ctx.snapshot.vectors[path].present.copy(), boost)
        return ctx.const(ctx.snapshot.columns[path].has_value(), boost)
    # an object path: exists when any leaf below it has a value
    leaves = [p for p in ctx.fields if p.startswith(path + ".")]
    mask = np.zeros(ctx.n, dtype=bool)
    for leaf in leaves:
        spec = ctx.fields[leaf]
        if spec.source_path != leaf:
            continue
        mask |= ctx.snapshot.vectors[leaf].present if spec.kind == "vector" else ctx.snapshot.columns[leaf].has_value()
    if ctx.scope is None and path in ctx.nested:
        scope = ctx.nested[path]
        prow = scope.snapshot.parent_rows
        mask |= np.bincount(prow[prow >= 0], minlength=ctx.n) > 0
    return ctx.const(mask, boost)


def eval_ids(body: Any, ctx: Context) -> Match:
    values = body.get("values") if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise BackendError("ids needs `values`: an array of ids")
    if ctx.scope is not None:
        raise UnsupportedQueryError("ids", where="nested query")
    row_of = ctx.snapshot.row_of
    mask = np.zeros(ctx.n, dtype=bool)
    for v in values:
        r = row_of.get(str(v))
        if r is not None:
            mask[r] = True
    return ctx.const(mask, float(body.get("boost", 1.0)))


_MATCH_KEYS = {"query", "operator", "minimum_should_match", "analyzer", "boost", "_name"}
_MULTI_MATCH_KEYS = _MATCH_KEYS | {"fields", "type", "tie_breaker"}


def _match_field(ctx: Context, fname: str, text: Any, params: dict[str, Any], where: str) -> Match:
    spec = ctx.field(fname, where)
    boost = float(params.get("boost", 1.0))
    unknown = set(params) - _MATCH_KEYS
    if unknown:
        raise UnsupportedQueryError(f"{where}.{sorted(unknown)[0]}", hint=f"{where} options the embedded backend "
                                    f"runs: {', '.join(sorted(_MATCH_KEYS))}")
    col = _col(ctx, fname, where)
    if not spec.analyzed:
        # keyword / numeric / date fields: the whole query is one term
        return ctx.const(_term_mask(col, [text], where), boost)
    analyzer = params.get("analyzer") or spec.query_analyzer
    if analyzer not in (None, *ANALYZERS):
        raise UnsupportedQueryError(f"{where}.analyzer {analyzer}", hint=f"built-in analyzers: {', '.join(ANALYZERS)}")
    tokens = analyze(str(text), analyzer)
    if not tokens:
        return ctx.no_rows()
    inv = col.inverted
    count = np.zeros(ctx.n, dtype=np.int64)
    score = np.zeros(ctx.n)
    for tok in tokens:
        rows, s = inv.bm25(tok) if ctx.scoring else (inv.term_rows(tok)[0], None)
        count[rows] += 1
        if s is not None:
            score[rows] += s
    n = len(tokens)
    if n == 1:
        required = 1
    elif str(params.get("operator", "or")).lower() == "and":
        required = n
    else:
        required = max(1, resolve_msm(params.get("minimum_should_match"), n))
    mask = count >= required
    return Match(mask, np.where(mask, score * boost, 0.0))


def eval_match(body: Any, ctx: Context) -> Match:
    fname, params = _field_and_body("match", body, "query")
    if "query" not in params:
        raise BackendError("match needs a `query`")
    return _match_field(ctx, fname, params["query"], params, "match")


def eval_multi_match(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict) or "query" not in body:
        raise BackendError("multi_match needs `query` and `fields`")
    unknown = set(body) - _MULTI_MATCH_KEYS
    if unknown:
        raise UnsupportedQueryError(f"multi_match.{sorted(unknown)[0]}", hint="multi_match options the embedded "
                                    f"backend runs: {', '.join(sorted(_MULTI_MATCH_KEYS))}")
    mtype = body.get("type", "best_fields")
    if mtype not in {"best_fields", "most_fields"}:
        raise UnsupportedQueryError(f"multi_match type {mtype}", hint="use best_fields or most_fields")
    fields = body.get("fields")
    if not fields:
        raise BackendError("multi_match on the embedded backend needs explicit `fields`")
    params = {k: v for k, v in body.items() if k in {"operator", "minimum_should_match", "analyzer"}}
    results = []
    for f in fields:
        name, _, weight = str(f).partition("^")
        try:
            res = _match_field(ctx, name, body["query"], {**params, "boost": float(weight or 1.0)}, "multi_match")
        except UnmappedFieldError:
            res = ctx.no_rows()  # OpenSearch skips unmapped fields
        results.append(res)
    mask = np.zeros(ctx.n, dtype=bool)
    for r in results:
        mask |= r.mask
    stacked = np.stack([r.score for r in results])
    if mtype == "most_fields":
        score = stacked.sum(axis=0)
    else:
        tie = float(body.get("tie_breaker", 0.0))
        best = stacked.max(axis=0)
        score = best + tie * (stacked.sum(axis=0) - best)
    return Match(mask, np.where(mask, score * float(body.get("boost", 1.0)), 0.0))


_BOOL_KEYS = {"must", "should", "filter", "must_not", "minimum_should_match", "boost", "_name", "adjust_pure_negative"}


def eval_bool(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict):
        raise BackendError("bool expects an object")
    unknown = set(body) - _BOOL_KEYS
    if unknown:
        raise UnsupportedQueryError(f"bool.{sorted(unknown)[0]}")

    def clauses(key: str) -> list[Any]:
        value = body.get(key) or []
        return value if isinstance(value, list) else [value]

    must, should, filt, must_not = (clauses(k) for k in ("must", "should", "filter", "must_not"))
    mask = np.ones(ctx.n, dtype=bool)
    score = np.zeros(ctx.n)
    for c in must:
        r = evaluate(c, ctx)
        mask &= r.mask
        score += r.score
    fctx = ctx.filter_context()
    for c in filt:
        mask &= evaluate(c, fctx).mask
    for c in must_not:
        mask &= ~evaluate(c, fctx).mask
    if should:
        results = [evaluate(c, ctx) for c in should]
        count = np.sum([r.mask for r in results], axis=0)
        spec = body.get("minimum_should_match")
        if spec is None:
            required = 0 if (must or filt) else 1
        else:
            required = resolve_msm(spec, len(should))
            if required == 0 and not (must or filt):
                required = 1  # Lucene: a pure disjunction still needs one clause
        if required > 0:
            mask &= count >= required
        for r in results:
            score += np.where(r.mask, r.score, 0.0)
    elif body.get("minimum_should_match") is not None and resolve_msm(body["minimum_should_match"], 0) > 0:
        mask &= False  # Lucene: more required should clauses than exist matches nothing
    boost = float(body.get("boost", 1.0))
    return Match(mask, np.where(mask, score * boost, 0.0))


def eval_constant_score(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict) or "filter" not in body:
        raise BackendError("constant_score needs `filter`")
    return ctx.const(evaluate(body["filter"], ctx.filter_context()).mask, float(body.get("boost", 1.0)))


def eval_nested(body: Any, ctx: Context) -> Match:
    if not isinstance(body, dict) or "path" not in body or "query" not in body:
        raise BackendError("nested needs `path` and `query`")
    if ctx.scope is not None:
        raise UnsupportedQueryError("nested inside nested")
    path = body["path"]
    scope = ctx.nested.get(path)
    if scope is None:
        if body.get("ignore_unmapped"):
            return ctx.no_rows()
        raise BackendError(
            f"`{path}` is not a nested field of index `{ctx.index}` (nested fields: {sorted(ctx.nested) or 'none'})",
            error_type="query_shard_exception",
        )
    child_ctx = Context(scope.fields, scope.snapshot, ctx.index, {}, ctx.scoring, ctx, scope, None, ctx.inner_hits)
    child = evaluate(body["query"], child_ctx)
    prow = scope.snapshot.parent_rows
    ok = child.mask & (prow >= 0)
    parents = prow[ok]
    mask = np.bincount(parents, minlength=ctx.n) > 0 if parents.size else np.zeros(ctx.n, dtype=bool)
    mode = body.get("score_mode", "avg")
    score = np.zeros(ctx.n)
    if parents.size and mode != "none":
        child_scores = child.score[ok]
        if mode == "max":
            score = np.full(ctx.n, -np.inf)
            np.maximum.at(score, parents, child_scores)
        elif mode == "min":
            score = np.full(ctx.n, np.inf)
            np.minimum.at(score, parents, child_scores)
        elif mode in {"sum", "avg"}:
            np.add.at(score, parents, child_scores)
            if mode == "avg":
                score = score / np.maximum(np.bincount(parents, minlength=ctx.n), 1)
        else:
            raise BackendError(f"nested score_mode must be avg, max, min, sum or none, got {mode!r}")
        score = np.where(mask, score, 0.0)
    if "inner_hits" in body:
        opts = body["inner_hits"] or {}
        ctx.inner_hits.append(InnerHitsRequest(opts.get("name", path), path, ok, child.score, opts))
    return Match(mask, score * float(body.get("boost", 1.0)))


def eval_match_all(body: Any, ctx: Context) -> Match:
    return ctx.all_rows(float((body or {}).get("boost", 1.0)))


def eval_match_none(body: Any, ctx: Context) -> Match:
    return ctx.no_rows()


CLAUSES: dict[str, Callable[[Any, Context], Match]] = {
    "bool": eval_bool,
    "term": eval_term,
    "terms": eval_terms,
    "range": eval_range,
    "exists": eval_exists,
    "ids": eval_ids,
    "match": eval_match,
    "multi_match": eval_multi_match,
    "match_all": eval_match_all,
    "match_none": eval_match_none,
    "constant_score": eval_constant_score,
    "knn": eval_knn,
    "nested": eval_nested,
}


#: Leaf queries that match nothing on an unmapped field (OpenSearch: 0 hits, no error).
_ZERO_WHEN_UNMAPPED = {"term", "terms", "range", "match"}


def evaluate(query: Any, ctx: Context) -> Match:
    name, body = _one_clause(query, "query")
    handler = CLAUSES.get(name)
    if handler is None:
        if name == "hybrid":
            raise UnsupportedQueryError("hybrid", where="a nested position", hint="hybrid must be the top-level query")
        raise UnsupportedQueryError(name)
    if name in _ZERO_WHEN_UNMAPPED:
        try:
            return handler(body, ctx)
        except UnmappedFieldError:
            return ctx.no_rows()
    return handler(body, ctx)


# ---------------------------------------------------------------- hybrid


NORMALIZATIONS = ("min_max", "l2")
COMBINATIONS = ("arithmetic_mean", "geometric_mean", "harmonic_mean")


def _hybrid_config(pipeline: dict[str, Any] | None, n_queries: int) -> dict[str, Any]:
    """The fusion a search pipeline asks for. Anything outside what `eval_hybrid` computes (z_score,
    another combination) is refused with the supported list, never silently replaced by min_max."""
    cfg = {"technique": "min_max", "combination": "arithmetic_mean", "weights": [1.0] * n_queries, "rank_constant": 60}
    for proc in (pipeline or {}).get("phase_results_processors", []):
        if "normalization-processor" in proc:
            p = proc["normalization-processor"]
            cfg["technique"] = (p.get("normalization") or {}).get("technique", "min_max")
            if cfg["technique"] not in NORMALIZATIONS:
                raise UnsupportedQueryError(
                    f"normalization technique {cfg['technique']}", where="normalization-processor",
                    hint=f"supported: {', '.join(NORMALIZATIONS)} (or score-ranker-processor rrf)")
            comb = p.get("combination") or {}
            cfg["combination"] = comb.get("technique", "arithmetic_mean")
            if cfg["combination"] not in COMBINATIONS:
                raise UnsupportedQueryError(f"combination technique {cfg['combination']}",
                                            where="normalization-processor", hint=f"supported: {', '.join(COMBINATIONS)}")
            weights = (comb.get("parameters") or {}).get("weights")
            if weights:
                cfg["weights"] = [float(w) for w in weights]
        elif "score-ranker-processor" in proc:
            comb = proc["score-ranker-processor"].get("combination") or {}
            if comb.get("technique", "rrf") != "rrf":
                raise UnsupportedQueryError(f"score-ranker technique {comb['technique']}",
                                            where="score-ranker-processor", hint="supported: rrf")
            cfg["technique"] = "rrf"
            # `parameters.rank_constant` is where neural-search 2.19 reads it; the spec documents the top level
            cfg["rank_constant"] = int((comb.get("parameters") or {}).get("rank_constant", comb.get("rank_constant", 60)))
            if cfg["rank_constant"] < 1:
                raise BackendError(f"rrf rank_constant must be >= 1, got {cfg['rank_constant']}")
            if set(comb.get("parameters") or {}) - {"rank_constant"}:  # weighted RRF is newer than the vendored spec: not emulated
                raise UnsupportedQueryError("score-ranker combination.parameters", where="score-ranker-processor",
                                            hint="supported: technique rrf with rank_constant (unweighted)")
        else:
            raise UnsupportedQueryError(f"search pipeline processor {next(iter(proc))}",
                                        hint="supported: normalization-processor, score-ranker-processor")
    if len(cfg["weights"]) != n_queries:
        raise BackendError(f"hybrid has {n_queries} sub-queries but the pipeline gives {len(cfg['weights'])} weights")
    return cfg


def _with_filter(query: dict[str, Any], flt: dict[str, Any]) -> dict[str, Any]:
    """The hybrid filter on one sub-query: inside k-NN (pre-filtering), else as a bool filter."""
    if isinstance(query, dict) and len(query) == 1 and "knn" in query and len(query["knn"]) == 1:
        fname, params = next(iter(query["knn"].items()))
        params = dict(params)
        params["filter"] = {"bool": {"filter": [params["filter"], flt]}} if params.get("filter") else flt
        return {"knn": {fname: params}}
    return {"bool": {"must": [query], "filter": [flt]}}


def eval_hybrid(body: Any, ctx: Context, pipeline: dict[str, Any] | None, depth: int) -> Match:
    """Each sub-query keeps its top `pagination_depth` (default from+size) hits, which are normalised
    and combined; a hybrid `filter` applies to every sub-query (OpenSearch 3.0+). hits.total counts every
    document any sub-query matched (as OpenSearch 2.19 does), not only the kept ones."""
    body = body or {}
    unknown = set(body) - {"queries", "filter", "pagination_depth", "_name"}
    if unknown:
        raise UnsupportedQueryError(f"hybrid.{min(unknown)}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not 1 <= len(queries) <= 5:
        raise BackendError("hybrid needs `queries`: 1 to 5 sub-queries")
    if body.get("pagination_depth") is not None:
        depth = int(body["pagination_depth"])
    if body.get("filter"):
        queries = [_with_filter(q, body["filter"]) for q in queries]
    cfg = _hybrid_config(pipeline, len(queries))
    normalized: list[np.ndarray] = []  # -1 where the sub-query did not return the row
    matched = np.zeros(ctx.n, dtype=bool)
    for q in queries:
        r = evaluate(q, ctx)
        matched |= r.mask
        rows = np.flatnonzero(r.mask)
        top = rows[np.lexsort((rows, -r.score[rows]))][:depth]
        out = np.full(ctx.n, -1.0)
        s = r.score[top]
        if top.size:
            if cfg["technique"] == "rrf":
                out[top] = 1.0 / (cfg["rank_constant"] + np.arange(1, top.size + 1))  # rank 1 first
            elif cfg["technique"] == "l2":
                out[top] = s / (np.sqrt(np.sum(s**2)) or 1.0)
            else:
                lo, hi = s.min(), s.max()
                out[top] = np.maximum((s - lo) / (hi - lo), 0.001) if hi > lo else 1.0
        normalized.append(out)
    stacked = np.stack(normalized)
    present = stacked >= 0
    mask = present.any(axis=0)
    total = int(matched.sum())
    if cfg["technique"] == "rrf":
        return Match(mask, np.where(present, stacked, 0.0).sum(axis=0), total)
    w = np.asarray(cfg["weights"])[:, None] * present
    sw = w.sum(axis=0)
    vals = np.where(present, stacked, 0.0)
    comb = cfg["combination"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if comb == "geometric_mean":
            score = np.exp((w * np.log(np.where(present, np.maximum(vals, 1e-9), 1.0))).sum(axis=0) / sw)
        elif comb == "harmonic_mean":
            score = sw / (w / np.where(present, np.maximum(vals, 1e-9), 1.0)).sum(axis=0)
        else:
            # OpenSearch's arithmetic mean scores a sub-query that missed the document as 0 and still counts its
            # weight (geometric and harmonic means skip it): divide by the sum of all weights
            score = (w * vals).sum(axis=0) / np.sum(cfg["weights"])
    return Match(mask, np.where(mask, np.nan_to_num(score), 0.0), total)


# ---------------------------------------------------------------- _source filtering


def _path_matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in patterns)


def _prefix_of_include(path: str, patterns: list[str]) -> bool:
    return any(p.startswith(path + ".") or fnmatch.fnmatchcase(path, p.split(".")[0]) for p in patterns)


def filter_source(source: dict[str, Any], spec: Any) -> dict[str, Any] | None:
    """Apply `_source` (bool, pattern(s), or includes/excludes) like OpenSearch."""
    if spec is None or spec is True:
        return source
    if spec is False:
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        includes, excludes = spec, []
    elif isinstance(spec, dict):
        includes = spec.get("includes") or spec.get("include") or []
        excludes = spec.get("excludes") or spec.get("exclude") or []
        includes = [includes] if isinstance(includes, str) else includes
        excludes = [excludes] if isinstance(excludes, str) else excludes
    else:
        raise BackendError("_source must be a boolean, a pattern, a list of patterns or {includes, excludes}")

    def walk(obj: Any, prefix: str) -> Any:
        if isinstance(obj, list):
            return [walk(x, prefix) for x in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if excludes and _path_matches(path, excludes):
                continue
            if includes and not _path_matches(path, includes):
                if isinstance(value, (dict, list)) and _prefix_of_include(path, includes):
                    sub = walk(value, path + ".")
                    if sub:
                        out[key] = sub
                continue
            out[key] = walk(value, path + ".") if isinstance(value, (dict, list)) else value
        return out

    return walk(source, "")


def wants_path(spec: Any, path: str) -> bool:
    """Whether `_source` filtering keeps `path` (used to skip re-attaching vectors)."""
    if spec is False:
        return False
    if spec is None or spec is True:
        return True
    return bool(filter_source(_nested_dict(path), spec))


def _nested_dict(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = 1
    return out


def eval_aggs(aggs: Any, ctx: Context, mask: np.ndarray) -> dict[str, Any]:
    """Bucket aggregations over the matching rows. Only `terms` on keyword/numeric fields (the
    rewriter reads each latent field's vocabulary with it); anything else is refused by name."""
    if not isinstance(aggs, dict):
        raise BackendError("aggs expects an object of named aggregations")
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        kind, body = _one_clause(spec, f"aggregation `{name}`")
        if kind != "terms":
            raise UnsupportedQueryError(kind, where=f"aggregation `{name}`", hint="the embedded backend runs `terms` only")
        if not isinstance(body, dict) or "field" not in body:
            raise BackendError(f"terms aggregation `{name}` needs a `field`")
        unknown = set(body) - {"field", "size", "min_doc_count", "order"}
        if unknown:
            raise UnsupportedQueryError(sorted(unknown)[0], where=f"terms aggregation `{name}`")
        if body.get("order") not in (None, {"_count": "desc"}):
            raise UnsupportedQueryError("order", where=f"terms aggregation `{name}`", hint="only _count desc")
        col = _col(ctx, body["field"], "terms aggregation")
        if col.spec.analyzed:
            raise BackendError(f"terms aggregation on text field `{body['field']}`: use its `.keyword` sub-field")
        keep = mask[col.parents] if col.parents.size else np.zeros(0, dtype=bool)
        if col.vocab is not None:
            labels, codes = col.vocab, col.values.astype(np.int64)
        else:  # numbers and booleans: code them by distinct value
            uniq, codes = np.unique(col.values, return_inverse=True)
            labels = [v.item() for v in uniq]
        # each value counts a row once, however often the row repeats it
        pairs = np.unique(np.stack([col.parents[keep], codes[keep]]), axis=1) if keep.any() \
            else np.zeros((2, 0), dtype=np.int64)
        keys, counts = np.unique(pairs[1], return_counts=True)
        min_count = int(body.get("min_doc_count", 1))
        order = np.lexsort((keys, -counts))
        order = order[counts[order] >= min_count]
        size = int(body.get("size", 10))
        top = order[:size]
        buckets = [
            {"key": labels[int(keys[i])], "doc_count": int(counts[i])}
            for i in top
        ]
        out[name] = {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": int(counts[order[size:]].sum()),
            "buckets": buckets,
        }
    return out
