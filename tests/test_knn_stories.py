"""Oracle 2: replay the OpenSearch API spec's own request/response stories against the embedded
backend and compare with what a real OpenSearch answered.

The stories live in `tests/vendor/opensearch-api-spec/tests/default/` (YAML: `prologues` set the
index up, `chapters` are the requests whose `response.payload` was recorded against OpenSearch,
`epilogues` clean up). Replayed here: the k-NN stories (`_core/search/knn/**`: k, filter,
min_score, max_distance, search_pipeline, on_disk) and the other stories whose requests fall in
the DSL subset latentsearch emits (match, multi_match, terms, _source filtering, hybrid, _count,
_msearch, match_all search).

How a story maps onto the `SearchBackend` API:

* `PUT /{index}` with settings+mappings -> `create_index`; `POST /{index}/_doc` -> `bulk` with a
  generated id; `POST /_bulk` (NDJSON, `index`/`create` actions) -> `bulk` per target index;
  `refresh=true` -> `refresh=True`; `DELETE /{index}` -> `delete_index`.
* Auto-created indices and unmapped fields: OpenSearch maps unknown fields dynamically (a string
  becomes `text` with a `keyword` sub-field, an integer `long`, a float `float`, ...), the
  embedded backend indexes declared fields only. The harness therefore adds to each index's
  mapping exactly the fields OpenSearch's default dynamic mapping would have added for the
  story's documents, before the first write. Every test that needed this says so in its id
  (`+dynamic`), and `test_dynamic_mapping_emulation_is_needed` pins down why it is there.
* `POST /{index}/_search` -> `search(index, body)`, `/_count` -> `count`, `/_msearch` -> `msearch`.

Comparison (the spec's runner checks that the recorded payload is a subset of the response):
every key of the recorded payload must be in the response with the same value; `_score` and
`max_score` within 1e-4, other floats within 1e-6 relative; `_source` must be *equal* (not a
subset: `_source` filtering is part of what is checked); `hits.hits` must have the same length
and order, except that hits with tied recorded scores (or no recorded score) may come in any
order among themselves. Generated `_id`s are never compared (the stories do not record them).

A story or chapter is skipped, with the reason in the skip message, only when it needs a feature
outside the embedded backend's documented surface: named search pipelines, ML Commons models,
cluster settings, `template` queries, query-string parameters that change the response shape.
A chapter inside the subset that the engine gets wrong *fails*; nothing is marked xfail.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.oracles.opensearch_spec import find_spec_dir

SPEC = find_spec_dir()
STORIES_ROOT = SPEC / "tests" / "default" if SPEC else None

# knn stories first (all of them), then the other stories in the DSL subset latentsearch emits
STORY_GLOBS = [
    "_core/search/knn/**/*.yaml",
    "_core/search/match.yaml",
    "_core/search/multi_match.yaml",
    "_core/search/_source.yaml",
    "_core/search/hybrid_query_pagination.yaml",
    "_core/search/query/terms/*.yaml",
    "_core/search/seq_no_primary_term.yaml",
    "indices/search.yaml",
    "indices/count.yaml",
    "indices/msearch/msearch.yaml",
]

# the DSL subset of the architecture notes / UnsupportedQueryError: anything else is out of scope
SUBSET_CLAUSES = {
    "bool", "term", "terms", "match", "multi_match", "range", "exists", "ids", "match_all", "match_none",
    "knn", "nested", "hybrid",
}  # fmt: skip
SUBSET_BODY_KEYS = {"query", "size", "from", "_source", "min_score", "collapse", "search_pipeline", "track_total_hits"}
# query-string parameters with no effect on a single-shard, single-node index
NEUTRAL_PARAMS = {"index", "allow_no_indices", "expand_wildcards", "ignore_unavailable", "preference", "routing"}
OUT_OF_SUBSET_PATHS = {
    "/_search/pipeline/": "named search pipelines cannot be created in the embedded backend (it takes an inline "
    "`search_pipeline` with a hybrid query only)",
    "/_plugins/_ml/": "ML Commons models (register/deploy/predict) do not exist in the embedded backend",
    "/_cluster/settings": "cluster settings do not exist in the embedded backend",
}
SCORE_TOL = 1e-4


# ---------------------------------------------------------------- story model


@dataclass
class Chapter:
    story: str
    number: int
    synopsis: str
    method: str
    path: str
    params: dict[str, Any]
    payload: Any
    response: dict[str, Any] | None

    @property
    def index(self) -> str:
        return str(self.params.get("index") or _path_index(self.path))


@dataclass
class Story:
    rel: str
    description: str
    prologues: list[dict[str, Any]]
    epilogues: list[dict[str, Any]]
    chapters: list[Chapter] = field(default_factory=list)
    skip_reason: str | None = None
    # index -> (mapping body to create, fields added by dynamic-mapping emulation)
    indices: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict)


def _path_index(path: str) -> str:
    return path.strip("/").split("/")[0]


def _bulk_pairs(payload: list[dict[str, Any]], default_index: str | None = None) -> list[tuple[str, str | None, dict]]:
    """(index, id, source) for the `index`/`create` actions of an NDJSON `_bulk` payload."""
    out = []
    lines = list(payload)
    while lines:
        action = lines.pop(0)
        (op, meta), = action.items()
        if op not in ("index", "create"):
            raise ValueError(f"bulk op {op!r} in a story prologue is not replayed")
        out.append((meta.get("_index") or default_index, meta.get("_id"), lines.pop(0)))
    return out


_DOC_PATH = re.compile(r"^/[^/_][^/]*/_doc(/[^/]+)?$")


def _doc_step(step: dict[str, Any]) -> bool:
    """`POST /{index}/_doc` (generated id) or `POST|PUT /{index}/_doc/{id}`."""
    return step["method"] in ("POST", "PUT") and bool(_DOC_PATH.match(step["path"]))


def _docs_by_index(prologues: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for step in prologues:
        payload = (step.get("request") or {}).get("payload")
        path = step["path"]
        if _doc_step(step):
            docs.setdefault(_path_index(path), []).append(payload)
        elif step["method"] == "POST" and path.rstrip("/").endswith("_bulk"):
            default = _path_index(path) if path.strip("/") != "_bulk" else None
            for index, _id, source in _bulk_pairs(payload, default):
                docs.setdefault(index, []).append(source)
    return docs


_DATE = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")


def _dynamic_type(value: Any) -> dict[str, Any] | None:
    """The field OpenSearch's default dynamic mapping creates for a JSON value (None: no field)."""
    if isinstance(value, list):
        value = next((v for v in value if v is not None), None)
    if value is None:
        return None
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, str):
        if _DATE.match(value):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    if isinstance(value, dict):
        return {"properties": {}}
    return None


def _add_dynamic_fields(props: dict[str, Any], doc: dict[str, Any], prefix: str, added: list[str]) -> None:
    for key, value in doc.items():
        existing = props.get(key)
        inner = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else value
        if existing is None:
            new = _dynamic_type(value)
            if new is None:
                continue
            props[key] = existing = new
            added.append(prefix + key)
        if isinstance(inner, dict) and existing.get("type", "object") in ("object", "nested"):
            if existing.get("dynamic") in (False, "false", "strict"):
                continue
            _add_dynamic_fields(existing.setdefault("properties", {}), inner, f"{prefix}{key}.", added)


def _plan_indices(prologues: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], list[str]]]:
    bodies: dict[str, dict[str, Any]] = {}
    for step in prologues:
        if step["method"] == "PUT" and "/_" not in step["path"] and not _doc_step(step):
            index = (step.get("parameters") or {}).get("index") or _path_index(step["path"])
            bodies[index] = dict((step.get("request") or {}).get("payload") or {})
    plan = {}
    for index, docs in _docs_by_index(prologues).items():
        body = bodies.setdefault(index, {})
        mappings = body.setdefault("mappings", {})
        added: list[str] = []
        if mappings.get("dynamic") not in (False, "false", "strict"):
            for doc in docs:
                _add_dynamic_fields(mappings.setdefault("properties", {}), doc, "", added)
        plan[index] = (body, added)
    for index, body in bodies.items():
        plan.setdefault(index, (body, []))
    return plan


def _clauses(query: Any) -> list[str]:
    """Names of every query clause in a query tree (for the out-of-subset check)."""
    if not isinstance(query, dict) or len(query) != 1:
        return []
    (name, body), = query.items()
    found = [name]
    if not isinstance(body, dict):
        return found
    if name == "bool":
        for occur in ("must", "should", "filter", "must_not"):
            sub = body.get(occur) or []
            for q in sub if isinstance(sub, list) else [sub]:
                found += _clauses(q)
    elif name == "nested":
        found += _clauses(body.get("query"))
    elif name == "hybrid":
        for q in body.get("queries") or []:
            found += _clauses(q)
    elif name == "knn":
        for params in body.values():
            if isinstance(params, dict) and params.get("filter"):
                found += _clauses(params["filter"])
    return found


def _chapter_skip_reason(ch: Chapter) -> str | None:
    endpoint = ch.path.rstrip("/").rsplit("/", 1)[-1]
    if endpoint not in ("_search", "_count", "_msearch"):
        return f"{ch.method} {ch.path} is not a search endpoint"
    extra = sorted(set(ch.params) - NEUTRAL_PARAMS)
    if extra:
        what = {"search_pipeline": "a named search pipeline"}.get(extra[0], "")
        return (
            f"query parameter(s) {', '.join(f'{k}={ch.params[k]!r}' for k in extra)} of {endpoint}"
            + (f" ({what})" if what else "")
            + " are outside the embedded backend's search(index, body) / count(index, query) surface"
        )
    bodies = ch.payload[1::2] if endpoint == "_msearch" else [ch.payload or {}]
    for body in bodies:
        keys = sorted(set(body) - SUBSET_BODY_KEYS)
        if keys:
            return f"search body key(s) {keys} are outside the DSL subset of the embedded backend"
        outside = sorted(set(_clauses(body.get("query"))) - SUBSET_CLAUSES)
        if outside:
            return f"query clause(s) {outside} are outside the DSL subset of the embedded backend"
        if "terms_lookup" in _clause_features(body.get("query")):
            return "a `terms` lookup (values read from another index's document) is outside the DSL subset"
    return None


def _clause_features(query: Any) -> set[str]:
    """Clause options outside the subset, found anywhere in the query tree."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            terms = node.get("terms")
            if isinstance(terms, dict) and any(isinstance(v, dict) and "index" in v for v in terms.values()):
                found.add("terms_lookup")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(query)
    return found


def load_story(path: Path) -> Story:
    raw = yaml.safe_load(path.read_text())
    rel = path.relative_to(STORIES_ROOT).as_posix()
    story = Story(rel, raw.get("description", ""), raw.get("prologues") or [], raw.get("epilogues") or [])
    outside: dict[str, list[str]] = {}
    for step in story.prologues:
        for prefix, why in OUT_OF_SUBSET_PATHS.items():
            if step["path"].startswith(prefix):
                outside.setdefault(why, []).append(f"{step['method']} {step['path']}")
    if outside:
        story.skip_reason = "prologues need what the embedded backend cannot have: " + "; ".join(
            f"{why} [{', '.join(steps)}]" for why, steps in outside.items()
        )
    for step in [] if outside else story.prologues:
        ok = (
            (step["method"] == "PUT" and "/_" not in step["path"])
            or _doc_step(step)
            or (step["method"] == "POST" and step["path"].endswith("_bulk"))
        )
        if not ok:
            story.skip_reason = f"prologue {step['method']} {step['path']} is not replayed by this harness"
            break
    if not story.skip_reason:
        story.indices = _plan_indices(story.prologues)
    for i, ch in enumerate(raw.get("chapters") or []):
        methods = ch["method"] if isinstance(ch["method"], list) else [ch["method"]]
        story.chapters.append(
            Chapter(rel, i, ch.get("synopsis", ""), methods[0], ch["path"], dict(ch.get("parameters") or {}),
                    (ch.get("request") or {}).get("payload"), ch.get("response"))
        )
    return story


#: Stories and chapters outside what the embedded engine is: not replayed, and pinned here so the set cannot
#: grow unnoticed (`test_outside_the_subset_is_exactly_this`); those a user could send are refused loudly
#: (`test_requests_outside_the_subset_are_refused`).
OUTSIDE: dict[str, str] = {}


def _collect() -> list[Any]:
    assert STORIES_ROOT is not None and STORIES_ROOT.is_dir(), "the vendored spec stories are missing"
    files = sorted({p for pattern in STORY_GLOBS for p in STORIES_ROOT.glob(pattern)})
    params = []
    for file in files:
        story = load_story(file)
        for ch in story.chapters:
            reason = story.skip_reason or _chapter_skip_reason(ch)
            if reason:
                OUTSIDE[f"{story.rel}[{ch.number}]"] = reason
                continue
            dyn = any(added for _, added in story.indices.values())
            test_id = f"{story.rel.removesuffix('.yaml')}[{ch.number}]{'+dynamic' if dyn else ''}"
            params.append(pytest.param(story, ch, id=test_id))
    return params


# ---------------------------------------------------------------- comparison


def _close(expected: float, actual: Any, key: str) -> bool:
    if not isinstance(actual, int | float) or isinstance(actual, bool):
        return False
    if key in ("_score", "max_score"):
        return math.isclose(expected, actual, rel_tol=0, abs_tol=SCORE_TOL)
    return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9)


def _equal(expected: Any, actual: Any, path: str, key: str = "") -> list[str]:
    """Exact structural equality (floats within tolerance)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        return [e for k in expected for e in _equal(expected[k], actual[k], f"{path}.{k}", k)]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        return [e for i, (x, y) in enumerate(zip(expected, actual)) for e in _equal(x, y, f"{path}[{i}]", key)]
    mismatch = [f"{path}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if expected is actual else mismatch
    if isinstance(expected, int | float):
        return [] if _close(float(expected), actual, key) else mismatch
    return [] if expected == actual else mismatch


def _subset(expected: Any, actual: Any, path: str, key: str = "") -> list[str]:
    """The spec runner's rule: the recorded payload is a subset of the response."""
    if key == "_source":
        return _equal(expected, actual, path, key)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        errors = []
        for k, v in expected.items():
            if k not in actual:
                errors.append(f"{path}.{k}: missing (expected {v!r})")
            elif k == "hits" and isinstance(v, list):
                errors += _hits(v, actual[k], f"{path}.hits")
            else:
                errors += _subset(v, actual[k], f"{path}.{k}", k)
        return errors
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items {expected!r}, got {actual!r}"]
        return [e for i, (x, y) in enumerate(zip(expected, actual)) for e in _subset(x, y, f"{path}[{i}]", key)]
    return _equal(expected, actual, path, key)


def _hits(expected: list[dict[str, Any]], actual: Any, path: str) -> list[str]:
    if not isinstance(actual, list):
        return [f"{path}: expected a list, got {actual!r}"]
    if len(expected) != len(actual):
        return [f"{path}: expected {len(expected)} hits, got {len(actual)}: {_brief(actual)}"]
    # groups of consecutive hits with tied recorded scores may come in any order among themselves
    errors: list[str] = []
    start = 0
    if any("_score" not in h for h in expected):
        groups = [(0, len(expected))]
    else:
        groups = []
        for _, grp in itertools.groupby(range(len(expected)), key=lambda i: round(expected[i]["_score"] / SCORE_TOL)):
            n = len(list(grp))
            groups.append((start, start + n))
            start += n
    for lo, hi in groups:
        pool = list(range(lo, hi))
        for i in range(lo, hi):
            match = next((j for j in pool if not _subset(expected[i], actual[j], "")), None)
            if match is None:
                closest = min(pool, key=lambda j: len(_subset(expected[i], actual[j], "")))
                errors += _subset(expected[i], actual[closest], f"{path}[{i}]")
            else:
                pool.remove(match)
    return errors


def _brief(hits: list[dict[str, Any]]) -> str:
    return repr([{k: h.get(k) for k in ("_id", "_score", "_source") if k in h} for h in hits])[:400]


# ---------------------------------------------------------------- replay


@pytest.fixture()
def backend(tmp_path: Path):
    try:
        from latentsearch.backends.embedded import EmbeddedBackend
    except ImportError as exc:  # pragma: no cover - while the engine is being written
        pytest.skip(f"embedded backend not importable yet: {exc}")
    b = EmbeddedBackend(tmp_path / "db")
    yield b
    b.close()


def run_prologues(backend: Any, story: Story) -> None:
    from latentsearch.backends.base import BulkAction

    created: set[str] = set()

    def ensure(index: str) -> None:
        if index not in created:
            body, _ = story.indices.get(index, ({}, []))
            backend.create_index(index, body)
            created.add(index)

    counter = itertools.count(1)
    for step in story.prologues:
        payload = (step.get("request") or {}).get("payload")
        params = step.get("parameters") or {}
        refresh = str(params.get("refresh", "false")).lower() in ("true", "wait_for", "")
        path = step["path"]
        if step["method"] == "PUT" and not _doc_step(step):
            ensure(params.get("index") or _path_index(path))
        elif _doc_step(step):
            index = _path_index(path)
            ensure(index)
            doc_id = path.split("/_doc/", 1)[1] if "/_doc/" in path else f"story-doc-{next(counter)}"
            results = backend.bulk(index, [BulkAction(id=doc_id, source=payload)], refresh=refresh)
            assert all(r.ok for r in results), f"prologue {path}: {results}"
        else:  # _bulk
            default = _path_index(path) if path.strip("/") != "_bulk" else None
            pairs = _bulk_pairs(payload, default)
            for index in dict.fromkeys(p[0] for p in pairs):
                ensure(index)
                actions = [
                    BulkAction(id=str(_id) if _id is not None else f"story-doc-{next(counter)}", source=src)
                    for i, _id, src in pairs
                    if i == index
                ]
                # the spec's on_disk story bulk-loads without ?refresh and searches at once; OpenSearch
                # answers because the k-NN search refreshes on read. Every write is searchable here.
                results = backend.bulk(index, actions, refresh=True)
                assert all(r.ok for r in results), f"prologue {path}: {results}"


def run_chapter(backend: Any, ch: Chapter) -> Any:
    endpoint = ch.path.rstrip("/").rsplit("/", 1)[-1]
    if endpoint == "_search":
        return backend.search(ch.index, ch.payload or {})
    if endpoint == "_count":
        return {"count": backend.count(ch.index, (ch.payload or {}).get("query"))}
    headers, bodies = ch.payload[0::2], ch.payload[1::2]
    for h in headers:
        assert h.get("index", ch.index) == ch.index, "multi-index msearch is not replayed"
    responses = backend.msearch(ch.index, bodies)
    return {"responses": responses}


@pytest.mark.parametrize(("story", "chapter"), _collect())
def test_story(backend: Any, story: Story, chapter: Chapter) -> None:
    run_prologues(backend, story)
    try:
        actual = run_chapter(backend, chapter)
    finally:
        for step in story.epilogues:
            if step["method"] == "DELETE" and "/_" not in step["path"]:
                backend.delete_index(_path_index(step["path"]), missing_ok=True)
    expected_status = (chapter.response or {}).get("status", 200)
    assert expected_status == 200, f"the harness only replays successful chapters (recorded {expected_status})"
    expected = (chapter.response or {}).get("payload")
    if expected is None:  # recorded status only: it must succeed and look like a search response
        if "responses" in actual:
            assert len(actual["responses"]) == len(chapter.payload) // 2
            assert all("hits" in r for r in actual["responses"])
        elif "count" not in actual:
            assert {"took", "timed_out", "hits"} <= set(actual)
        return
    errors = _subset(expected, actual, "response")
    assert not errors, (
        f"{story.rel} chapter {chapter.number} ({chapter.synopsis}) differs from the response recorded "
        f"against OpenSearch:\n  " + "\n  ".join(errors) + f"\nrequest: {chapter.payload!r}"
    )


def test_stories_were_found() -> None:
    if STORIES_ROOT is None:
        pytest.skip("the OpenSearch API spec stories are not available")
    knn = sorted(p.name for p in STORIES_ROOT.glob("_core/search/knn/search/*.yaml"))
    assert {"search_k.yaml", "search_filter.yaml", "search_min_score.yaml", "search_max_distance.yaml"} <= set(knn)


def test_outside_the_subset_is_exactly_this() -> None:
    """What is not replayed, and why: ML Commons and cluster settings (not part of an embedded engine), a
    terms lookup, and query parameters the backend API has no place for or refuses."""
    assert sorted(OUTSIDE) == [
        "_core/search/knn/search/search_pipeline.yaml[0]",
        "_core/search/query/terms/terms_lookup.yaml[0]",
        "_core/search/seq_no_primary_term.yaml[0]",
        "indices/count.yaml[1]",
    ], OUTSIDE


def test_requests_outside_the_subset_are_refused(backend: Any) -> None:
    """A user who sends what the embedded engine cannot do gets an error naming it, never a quietly different answer."""
    from latentsearch.backends.base import BulkAction, UnsupportedQueryError

    backend.create_index("movies", {})
    backend.bulk("movies", [BulkAction(id="1", source={"director": "Bennett Miller", "year": 2011})], refresh=True)
    lookup = {"query": {"terms": {"director": {"index": "movies", "id": "1", "path": "director"}}}}
    with pytest.raises(UnsupportedQueryError, match="terms lookup"):
        backend.search("movies", lookup)
    with pytest.raises(UnsupportedQueryError, match="seq_no_primary_term"):
        backend.search("movies", {"query": {"match_all": {}}}, params={"seq_no_primary_term": True})
    backend.delete_index("movies")


def test_dynamic_mapping_on_first_write(backend: Any) -> None:
    """The embedded backend maps a new field on its first write, as OpenSearch does, so stories run unaided."""
    from latentsearch.backends.base import BulkAction

    backend.create_index("movies", {})
    backend.bulk("movies", [BulkAction(id="1", source={"director": "Bennett Miller"})], refresh=True)
    result = backend.search("movies", {"query": {"match": {"director": "Bennett Miller"}}})
    assert result["hits"]["total"]["value"] == 1
    backend.delete_index("movies")


def _response(*hits: tuple[float, dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    return {
        "timed_out": False,
        "hits": {
            "total": {"value": len(hits) if total is None else total, "relation": "eq"},
            "max_score": max((s for s, _ in hits), default=None),
            "hits": [{"_index": "movies", "_id": f"id{i}", "_score": s, "_source": src} for i, (s, src) in enumerate(hits)],
        },
    }


def test_comparator_accepts_equal_and_tied_reorderings() -> None:
    a, b = {"title": "A", "v": [1.4, 2.3]}, {"title": "B"}
    recorded = _response((1.0, a), (1.0, b))
    for key in ("max_score",):
        recorded["hits"].pop(key)
    for hit in recorded["hits"]["hits"]:
        hit.pop("_id")
    assert _subset(recorded, _response((1.0, a), (1.0, b)), "r") == []
    assert _subset(recorded, _response((1.0, b), (1.00005, a)), "r") == []  # tie within 1e-4: any order
    assert _subset(recorded, _response((1.0, {"title": "A", "v": [1.4000000001, 2.3]}), (1.0, b)), "r") == []


def test_comparator_catches_differences() -> None:
    """The replay can fail: each engine mistake the stories could reveal is reported."""
    a, b = {"title": "A"}, {"title": "B"}
    recorded = _response((2.0, a), (1.0, b))
    for hit in recorded["hits"]["hits"]:
        hit.pop("_id")
    assert any("_score" in e for e in _subset(recorded, _response((2.0, a), (0.9, b)), "r"))  # score
    assert any("total" in e for e in _subset(recorded, _response((2.0, a), (1.0, b), total=3), "r"))  # total
    assert any("2 hits" in e for e in _subset(recorded, _response((2.0, a)), "r"))  # hit count
    assert _subset(recorded, _response((1.0, b), (2.0, a)), "r")  # order of distinct scores
    extra = _subset(recorded, _response((2.0, {"title": "A", "year": 1}), (1.0, b)), "r")
    assert any("_source" in e for e in extra)  # _source is compared whole, not as a subset
    assert _subset(recorded, _response((2.0, {"title": "a"}), (1.0, b)), "r")  # _source value
    assert _subset({"timed_out": False}, {"timed_out": 0}, "r")  # booleans are not numbers
    assert _subset({"hits": {"hits": []}}, {"hits": {"hits": [{"_id": "x"}]}}, "r")  # no hit expected
