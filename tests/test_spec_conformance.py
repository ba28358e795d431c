"""Oracle 1: every request body latentsearch generates validates against the official OpenSearch
OpenAPI spec (tests/vendor/opensearch-api-spec/spec), with unknown keys rejected (strict mode, see
tests/oracles/opensearch_spec.py). Negative controls prove the validator can fail."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from latentsearch import dsl
from latentsearch.config import EntitySchema, VectorIndexConfig
from latentsearch.mappings import opensearch_index_body
from tests.oracles.opensearch_spec import SpecNotFound, SpecValidator, find_spec_dir, load_validator

VEC = [0.25, -0.5, 0.125, 1.0]


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    try:
        return load_validator()
    except SpecNotFound as exc:
        pytest.fail(f"oracle 1 needs the OpenSearch API spec: {exc}")


def assert_valid(errors: list[str], what: str = "body") -> None:
    assert not errors, f"{what} violates the OpenSearch spec:\n  " + "\n  ".join(errors)


def assert_invalid(errors: list[str], *needles: str) -> None:
    assert errors, "the validator accepted a body it must reject"
    text = "\n".join(errors)
    for needle in needles:
        assert needle in text, f"expected {needle!r} in the errors:\n{text}"


# ---------------------------------------------------------------- mappings

SCHEMAS = {
    "no_latent_types": EntitySchema(),
    "several_types": EntitySchema(text_type="abstract", latent_types=["disease", "drug", "gene_family"]),
    "options_and_descriptions": EntitySchema(
        text_type="post",
        latent_types=[
            {"name": "newsgroup", "description": "the discussion topic", "options": ["space", "autos", "med"]},
            {"name": "airline"},
        ],
    ),
}
VECTORS = {
    f"{engine}-{space}": VectorIndexConfig(engine=engine, space_type=space)
    for engine in ("lucene", "faiss")
    for space in ("cosinesimil", "l2", "innerproduct")
}
VECTORS["faiss-l2-m32-ef256"] = VectorIndexConfig(engine="faiss", space_type="l2", m=32, ef_construction=256)


@pytest.mark.parametrize("vector", list(VECTORS.values()), ids=list(VECTORS))
@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_index_body_validates(spec: SpecValidator, schema: EntitySchema, vector: VectorIndexConfig) -> None:
    body = opensearch_index_body(schema, dimension=384, vector=vector, embedder="all-MiniLM-L6-v2")
    assert_valid(spec.validate_request_body("indices.create", body), "create-index body")
    assert_valid(spec.validate_request_body("indices.put_mapping", body["mappings"]), "put-mapping body")
    # the knn fields really carry the configured method (validation is not vacuous)
    method = body["mappings"]["properties"]["vector"]["method"]
    assert (method["engine"], method["space_type"]) == (vector.engine, vector.space_type)


def test_index_body_shards_and_replicas(spec: SpecValidator) -> None:
    body = opensearch_index_body(SCHEMAS["several_types"], dimension=768, shards=3, replicas=2, mention_dimension=192)
    assert_valid(spec.validate_request_body("indices.create", body))


# ---------------------------------------------------------------- query builders

MSM_FORMS = [2, -1, "-1", "75%", "-25%", "3<90%", "2<-25% 9<-3"]


def _should() -> list[dict[str, Any]]:
    return [dsl.term("latent.disease", "flu"), dsl.term("latent.drug", "aspirin"), dsl.terms("latent.gene", ["a", "b"])]


CLAUSES: dict[str, dict[str, Any]] = {
    "term": dsl.term("latent.disease", "influenza"),
    "term_boost_number": dsl.term("chunk.no", 3, boost=2.0),
    "terms": dsl.terms("latent.drug", ["aspirin", "ibuprofen"]),
    "terms_boost": dsl.terms("latent.drug", ["aspirin"], boost=1.6),
    "match": dsl.match("text", "fever and cough"),
    "match_options": dsl.match("text", "fever cough", operator="and", minimum_should_match="75%", boost=1.5),
    "multi_match": dsl.multi_match("dinosaur", ["title^2", "text"]),
    "multi_match_options": dsl.multi_match(
        "jurassic", ["title", "text"], type="most_fields", operator="or", minimum_should_match=-1, tie_breaker=0.3
    ),
    "range_int": dsl.range_("chunk.no", gte=0, lt=10),
    "range_all_bounds": dsl.range_("links.score", gt=0.1, lte=0.9),
    "range_dates": dsl.range_("metadata.date", gte="2020-01-01", lt="now"),
    "exists": dsl.exists("latent.disease"),
    "ids": dsl.ids(["a", "b"]),
    "match_all": dsl.match_all(),
    "bool_all_occurs": dsl.bool_query(
        must=[dsl.match("text", "fever")],
        should=_should(),
        filter=[dsl.range_("chunk.no", gte=0)],
        must_not=[dsl.exists("metadata.retracted")],
        minimum_should_match=1,
        boost=1.2,
    ),
    "bool_nested_bools": dsl.bool_query(
        filter=[dsl.bool_query(should=_should(), minimum_should_match="2<-25% 9<-3")],
        must_not=[dsl.bool_query(must=[dsl.ids(["x"])])],
    ),
    "knn_k": dsl.knn("vector", VEC, k=10),
    "knn_filter": dsl.knn(
        "vector", VEC, k=5, filter=dsl.bool_query(should=_should(), minimum_should_match="75%")
    ),
    "knn_min_score": dsl.knn("vector", VEC, k=None, min_score=0.75),
    "knn_max_distance": dsl.knn("vector", VEC, k=None, max_distance=1.5),
    "knn_ef_search_boost": dsl.knn("vector", VEC, k=20, ef_search=256, boost=0.5),
    "knn_radial_with_filter": dsl.knn("vector", VEC, k=None, min_score=0.5, filter=dsl.term("latent.disease", "flu")),
    "nested_knn": dsl.nested("mentions", dsl.knn("mentions.vector", VEC, k=3)),
    "nested_inner_hits": dsl.nested(
        "mentions",
        dsl.knn("mentions.vector", VEC, k=3, filter=dsl.term("mentions.type", "dinosaur")),
        score_mode="max",
        inner_hits={"size": 3, "_source": {"excludes": ["mentions.vector"]}, "name": "best_mentions"},
    ),
    "nested_bool_avg": dsl.nested(
        "links", dsl.bool_query(must=[dsl.term("links.entity_id", "Q42")]), score_mode="avg", inner_hits={}
    ),
    "hybrid": dsl.hybrid([dsl.match("text", "t rex"), dsl.knn("vector", VEC, k=10)]),
    "hybrid_full": dsl.hybrid(
        [
            dsl.multi_match("t rex", ["title^2", "text"]),
            dsl.knn("vector", VEC, k=10, filter=dsl.terms("latent.disease", ["flu"])),
            dsl.nested("mentions", dsl.knn("mentions.vector", VEC, k=5)),
        ]
    ),
}


@pytest.mark.parametrize("clause", list(CLAUSES.values()), ids=list(CLAUSES))
def test_query_builder_validates(spec: SpecValidator, clause: dict[str, Any]) -> None:
    assert_valid(spec.validate_query(clause), "query clause")
    assert_valid(spec.validate_request_body("search", dsl.search_body(clause)), "search body")


@pytest.mark.parametrize("msm", MSM_FORMS, ids=[str(m) for m in MSM_FORMS])
def test_bool_minimum_should_match_forms_validate(spec: SpecValidator, msm: int | str) -> None:
    query = dsl.bool_query(should=_should(), filter=[dsl.exists("text")], minimum_should_match=msm)
    assert "minimum_should_match" in query["bool"]
    assert_valid(spec.validate_request_body("search", dsl.search_body(query)))
    inner = dsl.knn("vector", VEC, k=5, filter=query)
    assert_valid(spec.validate_request_body("search", dsl.search_body(inner)))


@pytest.mark.parametrize("msm", MSM_FORMS, ids=[str(m) for m in MSM_FORMS])
def test_match_minimum_should_match_forms_validate(spec: SpecValidator, msm: int | str) -> None:
    assert_valid(spec.validate_query(dsl.match("text", "a b c d", minimum_should_match=msm)))
    assert_valid(spec.validate_query(dsl.multi_match("a b c d", ["title", "text"], minimum_should_match=msm)))


SEARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "paging": {"size": 50, "from_": 20},
    "min_score": {"min_score": 0.35},
    "collapse": {"collapse_field": "doc_id"},
    "source_includes_excludes": {"source_includes": ["title", "text", "latent.*"], "source_excludes": ["vector"]},
    "no_source_filter": {"source_excludes": None},
    "temporary_pipeline": {"search_pipeline": dsl.normalization_pipeline(weights=[0.3, 0.7])},
    "everything": {
        "size": 5,
        "from_": 5,
        "min_score": 0.1,
        "collapse_field": "doc_id",
        "source_includes": ["title"],
        "search_pipeline": dsl.normalization_pipeline("l2", "harmonic_mean", weights=[0.5, 0.5]),
    },
}


@pytest.mark.parametrize("options", list(SEARCH_OPTIONS.values()), ids=list(SEARCH_OPTIONS))
def test_search_body_options_validate(spec: SpecValidator, options: dict[str, Any]) -> None:
    query = dsl.hybrid([dsl.match("text", "fever"), dsl.knn("vector", VEC, k=10)])
    body = dsl.search_body(query, **options)
    assert_valid(spec.validate_request_body("search", body))


def test_temporary_search_pipeline_is_a_spec_erratum(spec: SpecValidator) -> None:
    """The raw spec types `search_pipeline` in the body as a string; OpenSearch also takes an inline
    (temporary) pipeline object. The erratum accepts it *and validates it* as a pipeline."""
    body = dsl.search_body(dsl.match_all(), search_pipeline=dsl.normalization_pipeline())
    raw = load_validator(errata=False)
    assert_invalid(raw.validate_request_body("search", body), "/search_pipeline", "is not of type 'string'")
    assert_valid(spec.validate_request_body("search", body))
    assert spec.errata_applied and "search_pipeline" in spec.errata_applied[0]
    assert_valid(spec.validate_request_body("search", {"query": {"match_all": {}}, "search_pipeline": "named"}))
    bad = dsl.search_body(dsl.match_all(), search_pipeline={"phase_results_processors": [{"normalisation": {}}]})
    assert_invalid(spec.validate_request_body("search", bad), "/search_pipeline")


PIPELINES = {
    "default": dsl.normalization_pipeline(),
    "l2_geometric": dsl.normalization_pipeline("l2", "geometric_mean"),
    "min_max_harmonic_weights": dsl.normalization_pipeline("min_max", "harmonic_mean", weights=[0.2, 0.3, 0.5]),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES.values()), ids=list(PIPELINES))
def test_normalization_pipeline_validates(spec: SpecValidator, pipeline: dict[str, Any]) -> None:
    assert_valid(spec.validate_request_body("search_pipeline.put", pipeline), "search pipeline")


def test_msearch_ndjson_pairs_validate(spec: SpecValidator) -> None:
    """The rewriter's one-msearch-per-query shape: header/body pairs, one per strictness level."""
    lines: list[dict[str, Any]] = []
    for msm in ("100%", "75%", 1):
        lines.append({"index": "scifact"})
        filt = dsl.bool_query(should=_should(), minimum_should_match=msm)
        lines.append(dsl.search_body(dsl.knn("vector", VEC, k=10, filter=filt), size=10))
    assert_valid(spec.validate_msearch(lines), "msearch NDJSON")
    # roles are positional: a body in a header slot is caught
    assert_invalid(spec.validate_msearch([lines[1], lines[0]]), "line 0", "line 1")


# ---------------------------------------------------------------- negative controls


def test_negative_misspelled_query_clause(spec: SpecValidator) -> None:
    body = {"query": {"terrm": {"latent.disease": {"value": "flu"}}}}
    assert_invalid(spec.validate_request_body("search", body), "terrm")
    assert_invalid(spec.validate_query({"bool": {"shuld": [dsl.match_all()]}}), "shuld")
    assert_invalid(spec.validate_request_body("search", {"queryy": dsl.match_all()}), "queryy")


def test_negative_misspelled_clause_passes_the_raw_spec() -> None:
    """Why strict mode exists: the spec never says `additionalProperties: false` on request schemas,
    so without it a misspelled clause is silently valid (OpenSearch itself rejects it)."""
    try:
        loose = load_validator(strict=False)
    except SpecNotFound as exc:
        pytest.fail(str(exc))
    assert loose.validate_request_body("search", {"query": {"terrm": {"f": "v"}}}) == []


def test_negative_knn_string_vector(spec: SpecValidator) -> None:
    body = dsl.search_body(dsl.knn("vector", VEC, k=3))
    body["query"]["knn"]["vector"]["vector"] = ["0.25", "-0.5", "0.125", "1.0"]
    assert_invalid(spec.validate_request_body("search", body), "/query/knn/vector/vector/0", "is not of type 'number'")
    body["query"]["knn"]["vector"]["vector"] = "0.25,-0.5"
    assert_invalid(spec.validate_request_body("search", body), "/query/knn/vector/vector")


def test_negative_knn_bad_parameters(spec: SpecValidator) -> None:
    clause = dsl.knn("vector", VEC, k=3)
    clause["knn"]["vector"]["min_scor"] = 0.5
    assert_invalid(spec.validate_query(clause), "min_scor")
    clause = dsl.knn("vector", VEC, k=3)
    clause["knn"]["vector"]["k"] = "3"
    assert_invalid(spec.validate_query(clause), "/knn/vector/k")
    assert_invalid(spec.validate_query({"knn": {"vector": {"k": 3}}}), "'vector' is a required property")


def test_negative_mapping_unknown_property_type(spec: SpecValidator) -> None:
    body = opensearch_index_body(SCHEMAS["several_types"], dimension=384)
    body["mappings"]["properties"]["latent"]["properties"]["disease"] = {"type": "keywrd"}
    assert_invalid(spec.validate_request_body("indices.create", body), "/mappings/properties/latent/properties/disease/type", "keywrd")


def test_negative_mapping_unknown_parameter(spec: SpecValidator) -> None:
    body = opensearch_index_body(SCHEMAS["several_types"], dimension=384)
    body["mappings"]["properties"]["vector"]["dimensions"] = 384  # ES-ism: OpenSearch says `dimension`
    assert_invalid(spec.validate_request_body("indices.create", body), "dimensions")
    body = opensearch_index_body(SCHEMAS["several_types"], dimension=384)
    del body["mappings"]["properties"]["vector"]["dimension"]
    assert_invalid(spec.validate_request_body("indices.create", body), "'dimension' is a required property")
    body = opensearch_index_body(SCHEMAS["several_types"], dimension=384)
    body["mappings"]["properties"]["vector"]["method"]["space"] = "l2"
    assert_invalid(spec.validate_request_body("indices.create", body), "space")


def test_negative_pipeline_and_bodies(spec: SpecValidator) -> None:
    pipe = dsl.normalization_pipeline()
    pipe["phase_results_processors"][0]["normalization-processor"]["normalisation"] = {"technique": "l2"}
    assert_invalid(spec.validate_request_body("search_pipeline.put", pipe), "normalisation")
    assert_invalid(spec.validate_request_body("search", {"size": "ten"}), "/size")
    assert_invalid(spec.validate_request_body("search", {"collapse": {"fields": "doc_id"}}), "/collapse")


# ---------------------------------------------------------------- the validator against the spec's own stories


# Request bodies recorded in the spec's own stories that its schemas reject even without strict mode:
# genuine gaps of the spec, not of the validator. Anything else rejected is a validator bug.
KNOWN_SPEC_GAPS = {
    # `term_vector: true` is accepted by OpenSearch; TextProperty types term_vector as an enum string
    ("indices/mtermvectors.yaml", "indices.create"),
    ("indices/termvectors.yaml", "indices.create"),
    # the `ml_inference` search request processor is not modelled in RequestProcessor
    ("_core/search/knn/search/search_pipeline.yaml", "search_pipeline.put"),
}


def _story_request_bodies(spec: SpecValidator) -> list[tuple[str, str, Any, str | None]]:
    routes = []
    for doc in spec.docs.values():
        for path, item in ((doc or {}).get("paths") or {}).items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in item.items():
                if isinstance(op, dict) and "requestBody" in op:
                    routes.append((rx, path.count("{"), method, op["x-operation-group"]))
    stories = Path(find_spec_dir() or ".") / "tests"
    out = []
    for file in sorted(stories.rglob("*.yaml")):
        story = yaml.load(file.read_text(), Loader=yaml.CSafeLoader)
        for step in (story.get("prologues") or []) + (story.get("chapters") or []):
            request = step.get("request") or {}
            if "payload" not in request:
                continue
            method = step["method"][0] if isinstance(step["method"], list) else step["method"]
            hits = sorted((n, g) for rx, n, m, g in routes if m == method.lower() and rx.match(step["path"]))
            if hits:
                out.append((file.relative_to(stories / "default").as_posix(), hits[0][1], request["payload"],
                            request.get("content_type")))
    return out


def _check_story_bodies(spec: SpecValidator, *, aggregations: bool) -> None:
    bodies = _story_request_bodies(spec)
    assert len(bodies) > 200
    if not aggregations:
        bodies = [b for b in bodies if not b[0].startswith("_core/search/aggregations/")]
    failures = {}
    for story, group, payload, ctype in bodies:
        errors = spec.validate_request_body(group, payload, content_type=ctype)
        if errors:
            failures[(story, group)] = errors
    unexpected = {k: v for k, v in failures.items() if k not in KNOWN_SPEC_GAPS}
    assert not unexpected, "strict validation rejects real OpenSearch requests:\n" + "\n".join(
        f"{k}: {v[:2]}" for k, v in unexpected.items()
    )
    assert set(failures) == KNOWN_SPEC_GAPS, f"a known spec gap is gone, update KNOWN_SPEC_GAPS: {set(failures)}"


def test_strict_validator_accepts_the_specs_own_recorded_requests(spec: SpecValidator) -> None:
    """Guards strict mode against false positives: the request bodies recorded against a real
    OpenSearch in the spec's own test stories must validate, except the listed spec gaps.
    (Aggregation stories, which latentsearch never emits and which cost ~2 s, run with -m slow.)"""
    _check_story_bodies(spec, aggregations=False)


@pytest.mark.slow
def test_strict_validator_accepts_all_recorded_requests_incl_aggregations(spec: SpecValidator) -> None:
    _check_story_bodies(spec, aggregations=True)


def _group_of(body: dict[str, Any]) -> str | None:
    if "mappings" in body or "settings" in body:
        return "indices.create"
    if {"request_processors", "response_processors", "phase_results_processors"} & body.keys():
        return "search_pipeline.put"
    if "processors" in body:
        return "ingest.put_pipeline"
    return None


def test_generated_definition_files_validate(spec: SpecValidator) -> None:
    """`mappings/generated/*.json` (written for cluster admins) must be valid request bodies.
    Files named `elasticsearch-*` are Elasticsearch bodies: the OpenSearch spec does not apply."""
    import json

    folder = Path(__file__).resolve().parents[1] / "mappings" / "generated"
    checked = 0
    for file in sorted(folder.glob("*.json")):
        if file.name.startswith("elasticsearch-"):
            continue
        body = json.loads(file.read_text())
        group = _group_of(body) if isinstance(body, dict) else None
        if group is not None:
            assert_valid(spec.validate_request_body(group, body), file.name)
            checked += 1
    if not checked:
        pytest.skip("no generated index/pipeline JSON in mappings/generated/ yet")


# ---------------------------------------------------------------- the search service's bodies (issue 15)


@pytest.mark.parametrize(("mode", "fusion", "weights"), [
    ("bm25", None, None), ("dense", None, None), ("hybrid", None, None), ("hybrid", "rrf", None),
    ("hybrid", "min_max", None), ("hybrid", "min_max", (0.3, 0.7)),
], ids=["bm25", "dense", "hybrid-default", "hybrid-rrf", "hybrid-min_max", "hybrid-min_max-weights"])
def test_search_service_bodies_validate(spec: SpecValidator, mode: str, fusion: str | None,
                                        weights: tuple[float, float] | None) -> None:
    """What `latentsearch search` sends (match on `content`, hybrid with its fusion pipeline inline)."""
    from latentsearch.query.search import build_body

    body = build_body("statins lower cholesterol", mode=mode, k=10, vector=VEC,  # type: ignore[arg-type]
                      filter=dsl.term("metadata.year", 2020), fusion=fusion, weights=weights)  # type: ignore[arg-type]
    assert_valid(spec.validate_request_body("search", body))
