"""OpenSearch ML Commons wiring: every request `opensearch-setup` sends, checked against independent oracles.

* the official OpenSearch API spec (tests/vendor/opensearch-api-spec, strict mode) for every body and for
  every method + path (each step names its x-operation-group);
* the spec does not model the `ml_inference` ingest processor nor the `ml_inference` search request
  processor (a gap its own test stories hit, see KNOWN_SPEC_GAPS in test_spec_conformance.py). Those
  processors are checked against the parameter names ML Commons' parsers read
  (opensearch-project/ml-commons, `MLInferenceIngestProcessor` / `MLInferenceSearchRequestProcessor` /
  `InferenceProcessorAttributes`, Apache-2.0), and the spec is asserted to reject them *only* for that key;
* the model server's own request/response models (onnx_export/serve/schemas.py) for what the connector
  templates send and what the output maps read;
* a real HTTP server recording what opensearch-py puts on the wire for `latentsearch opensearch-setup`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from latentsearch.config import EntitySchema
from latentsearch.mappings.ml_commons import MLCommonsConfig, Step, plan, search_pipeline_body, trusted_endpoint_regex
from tests.oracles.http_fakes import LoopbackServer, Recorded
from tests.oracles.opensearch_spec import SpecNotFound, SpecValidator, load_validator

SAMPLE = Path(__file__).resolve().parents[1] / "latentsearch" / "data" / "scifact-sample.jsonl"
SCHEMA = EntitySchema(text_type="biomedical abstract",
                      latent_types=["disease", {"name": "study_type", "options": ["rct", "cohort", "case report"]}])
CFG = MLCommonsConfig(entities=SCHEMA, server_url="http://latentsearch:8080")

# Parameter names the ML Commons processors parse (ml-commons, see module docstring). Values: ingest documents
# and queries map field names to field paths, all strings (List<Map<String, String>>, Map<String, String>).
_STR_MAPS = {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}}
_COMMON = {
    "model_id": {"type": "string", "minLength": 1}, "function_name": {"type": "string"},
    "input_map": _STR_MAPS, "output_map": _STR_MAPS,
    "model_config": {"type": "object", "additionalProperties": {"type": "string"}},
    "max_prediction_tasks": {"type": "integer", "minimum": 1}, "full_response_path": {"type": "boolean"},
    "model_input": {"type": "string"}, "ignore_missing": {"type": "boolean"}, "ignore_failure": {"type": "boolean"},
    "tag": {"type": "string"}, "description": {"type": "string"},
}
ML_INFERENCE_INGEST = {"type": "object", "required": ["model_id"], "additionalProperties": False,
                       "properties": {**_COMMON, "override": {"type": "boolean"}}}
ML_INFERENCE_SEARCH_REQUEST = {"type": "object", "required": ["model_id"], "additionalProperties": False,
                               "properties": {**_COMMON, "query_template": {"type": "string"},
                                              "optional_input_map": _STR_MAPS, "optional_output_map": _STR_MAPS}}


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    try:
        return load_validator()
    except SpecNotFound as exc:
        pytest.fail(f"the OpenSearch API spec is needed: {exc}")


def scifact_text() -> str:
    with SAMPLE.open(encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(100), fh)]
    # a text with characters JSON must escape, so the templates are tested where they can break
    return next((t for t in texts if any(c in t for c in '"\\')), texts[0] + ' "quoted" \\ back\\slash')


def split_ml_inference(body: dict[str, Any], key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pipeline body without its ml_inference processors, and those processors."""
    rest = copy.deepcopy(body)
    ml = [p["ml_inference"] for p in rest[key] if "ml_inference" in p]
    rest[key] = [p for p in rest[key] if "ml_inference" not in p]
    return rest, ml


def spec_routes(spec: SpecValidator) -> list[tuple[re.Pattern[str], str, str]]:
    routes = []
    for doc in spec.docs.values():
        for path, item in ((doc or {}).get("paths") or {}).items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in item.items():
                if isinstance(op, dict) and "x-operation-group" in op:
                    routes.append((rx, method.upper(), op["x-operation-group"]))
    return routes


# ---------------------------------------------------------------- the bodies against the spec


def test_plan_order_and_routes_match_the_spec(spec: SpecValidator) -> None:
    steps = plan(CFG)
    assert [s.name for s in steps] == [
        "cluster settings", "model group",
        "embeddings connector", "embeddings model", "embeddings deploy",
        "extract connector", "extract model", "extract deploy",
        "mentions connector", "mentions model", "mentions deploy",
        "ingest pipeline", "search pipeline",
    ]
    routes = spec_routes(spec)
    for step in steps:
        path = re.sub(r"\{[a-z_]+\}", "abc123", step.path)
        groups = {g for rx, m, g in routes if m == step.method and rx.match(path)}
        assert step.operation_group in groups, (step.name, step.method, step.path, groups)


def test_every_body_validates_against_the_spec(spec: SpecValidator) -> None:
    for step in plan(CFG):
        if step.body is None:
            continue
        if step.operation_group == "ingest.put_pipeline":
            rest, ml = split_ml_inference(step.body, "processors")
            schema = ML_INFERENCE_INGEST
        elif step.operation_group == "search_pipeline.put":
            rest, ml = split_ml_inference(step.body, "request_processors")
            schema = ML_INFERENCE_SEARCH_REQUEST
        else:
            rest, ml, schema = step.body, [], {}
        errors = spec.validate_request_body(step.operation_group, rest)
        assert not errors, (step.name, errors)
        for proc in ml:
            errors = [e.message for e in Draft202012Validator(schema).iter_errors(proc)]
            assert not errors, (step.name, errors)


def test_only_the_extract_connector_waits_longer_and_the_spec_checks_it(spec: SpecValidator) -> None:
    """An LLM call per document outlasts ML Commons' 30 s default read timeout on CPU: the extract connector
    carries `client_config.read_timeout` (seconds; the real-node test runs extraction through it)."""
    bodies = {s.name: s.body for s in plan(CFG) if s.name.endswith("connector")}
    assert bodies["extract connector"]["client_config"] == {"read_timeout": 120}  # type: ignore[index]
    assert all("client_config" not in b for n, b in bodies.items() if n != "extract connector")  # type: ignore[operator]
    wrong = {**bodies["extract connector"], "client_config": {"read_timeout": "2 minutes"}}  # type: ignore[dict-item]
    assert spec.validate_request_body("ml.create_connector", wrong)


def test_the_spec_rejects_ml_inference_only_for_the_missing_processor(spec: SpecValidator) -> None:
    """Documents the gap: if the spec starts modelling `ml_inference`, this fails and the split above goes."""
    steps = {s.name: s for s in plan(CFG)}
    errors = spec.validate_request_body("ingest.put_pipeline", steps["ingest pipeline"].body)
    assert len(errors) == 3 and all("'ml_inference' was unexpected" in e for e in errors), errors
    errors = spec.validate_request_body("search_pipeline.put", steps["search pipeline"].body)
    assert len(errors) == 1 and "/request_processors/0" in errors[0], errors


def test_the_ml_inference_oracle_catches_mistakes() -> None:
    steps = {s.name: s for s in plan(CFG)}
    proc = copy.deepcopy(steps["ingest pipeline"].body["processors"][0]["ml_inference"])  # type: ignore[index]
    proc["output_maps"] = proc.pop("output_map")  # misspelled
    assert list(Draft202012Validator(ML_INFERENCE_INGEST).iter_errors(proc))
    proc = copy.deepcopy(steps["search pipeline"].body["request_processors"][0]["ml_inference"])  # type: ignore[index]
    proc["query_template"] = {"query": {}}  # must be a string
    assert list(Draft202012Validator(ML_INFERENCE_SEARCH_REQUEST).iter_errors(proc))


def test_search_pipeline_template_renders_a_valid_knn_search(spec: SpecValidator, embedder) -> None:
    """Fill `${query_vector}` as ML Commons does (the model's output, JSON) with a real MiniLM query vector:
    the rewritten request must be a valid search body with a k-NN query on `vector`."""
    body = search_pipeline_body(CFG, "model-1")
    proc = body["request_processors"][0]["ml_inference"]
    assert proc["input_map"] == [{"input": "query.match.text.query"}]
    vector = embedder.encode(["Which drugs lower the risk of heart attack?"])[0].tolist()
    rendered = json.loads(proc["query_template"].replace("${query_vector}", json.dumps(vector)))
    assert not spec.validate_request_body("search", rendered)
    assert rendered["query"]["knn"]["vector"]["vector"] == pytest.approx(vector)
    assert rendered["query"]["knn"]["vector"]["k"] == CFG.k
    # the query the user sends is valid too, and holds the text where input_map reads it
    user_query = {"query": {"match": {"text": {"query": "heart attack drugs"}}}}
    assert not spec.validate_request_body("search", user_query)


def test_trusted_endpoint_regex_is_exact() -> None:
    rx = re.compile(trusted_endpoint_regex("http://latentsearch:8080/"))
    assert rx.match("http://latentsearch:8080/v1/embeddings")
    assert not rx.match("http://latentsearch:80800/v1/embeddings")
    assert not rx.match("http://evil.example/?u=http://latentsearch:8080/x")
    with pytest.raises(ValueError, match="http"):
        trusted_endpoint_regex("latentsearch:8080")


# ---------------------------------------------------------------- the templates against the model server's schemas


def render(template: str, parameters: dict[str, str]) -> Any:
    """ML Commons' substitution: `${parameters.x}` -> the parameter string verbatim."""
    out = re.sub(r"\$\{parameters\.([A-Za-z_]+)\}", lambda m: parameters[m.group(1)], template)
    return json.loads(out)


def test_connector_templates_produce_requests_the_server_accepts() -> None:
    from latentsearch.onnx_export.serve.schemas import EmbeddingRequest, ExtractRequest, MentionsRequest

    text = scifact_text()
    steps = {s.name: s for s in plan(CFG)}
    # the processor JSON-escapes a string field without quoting it (seen on a real ML Commons 2.19.1 node)
    doc_value = json.dumps(text)[1:-1]
    wire = {}
    for key, model in (("embeddings", EmbeddingRequest), ("extract", ExtractRequest), ("mentions", MentionsRequest)):
        connector = steps[f"{key} connector"].body
        action = connector["actions"][0]  # type: ignore[index]
        assert action["action_type"] == "predict" and action["method"] == "POST"
        (input_name,) = steps["ingest pipeline"].body["processors"][  # type: ignore[index]
            ["embeddings", "extract", "mentions"].index(key)]["ml_inference"]["input_map"][0].keys()
        params = {**connector["parameters"], input_name: doc_value}  # type: ignore[index]
        wire[key] = model.model_validate(render(action["request_body"], params))
    assert wire["embeddings"].input == text and wire["embeddings"].model == "all-MiniLM-L6-v2"
    assert wire["extract"].texts == [text] and wire["extract"].text_type == "biomedical abstract"
    assert [t.name for t in wire["extract"].types] == ["disease", "study_type"]
    assert wire["extract"].types[1].options == ["rct", "cohort", "case report"]
    assert wire["mentions"].texts == [text]


def resolve(doc: Any, path: str) -> Any:
    """The subset of JSONPath the output maps use: dotted keys and [i] indices."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        doc = doc[int(part[1:-1])] if part.startswith("[") else doc[part]
    return doc


def test_output_maps_read_fields_the_server_returns() -> None:
    from latentsearch.onnx_export.serve.schemas import (
        EmbeddingData,
        EmbeddingResponse,
        ExtractResponse,
        ExtractResult,
        Mention,
        MentionsResponse,
        MentionsResult,
        Usage,
    )

    responses = {
        "embeddings": EmbeddingResponse(data=[EmbeddingData(index=0, embedding=[0.1] * 384)], model="m",
                                        usage=Usage(prompt_tokens=3, total_tokens=3)),
        "extract": ExtractResponse(model="m", took_ms=1.0, results=[ExtractResult(
            index=0, latent={"disease": ["myocardial infarction"], "study_type": ["rct"]})]),
        "mentions": MentionsResponse(model="m", dimension=500, took_ms=1.0, results=[MentionsResult(
            index=0, mentions=[Mention(start=0, end=7, text="aspirin", vector=[0.0] * 500)])]),
    }
    processors = next(s for s in plan(CFG) if s.name == "ingest pipeline").body["processors"]  # type: ignore[index]
    fields = {}
    for proc, key in zip(processors, ["embeddings", "extract", "mentions"]):
        doc = json.loads(responses[key].model_dump_json())
        for target, source in proc["ml_inference"]["output_map"][0].items():
            fields[target] = resolve(doc, source)
    assert len(fields["vector"]) == 384
    assert fields["latent.disease"] == ["myocardial infarction"] and fields["latent.study_type"] == ["rct"]
    assert fields["mentions"][0]["text"] == "aspirin" and len(fields["mentions"][0]["vector"]) == 500
    # and those are the index's fields (mappings/builder.py)
    from latentsearch.mappings import opensearch_index_body

    props = opensearch_index_body(SCHEMA, dimension=384)["mappings"]["properties"]
    assert props["vector"]["dimension"] == 384 and set(props["latent"]["properties"]) == {"disease", "study_type"}
    assert props["mentions"]["type"] == "nested"


def test_extract_is_skipped_without_latent_types() -> None:
    steps = plan(MLCommonsConfig())
    assert not any(s.name.startswith("extract") for s in steps)
    procs = next(s for s in steps if s.name == "ingest pipeline").body["processors"]  # type: ignore[index]
    assert [p["ml_inference"]["tag"] for p in procs] == ["latentsearch-embeddings", "latentsearch-mentions"]


# ---------------------------------------------------------------- `latentsearch opensearch-setup` on the wire


class FakeMLCommons:
    """Answers the setup calls like ML Commons does (ids in the documented response fields)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.n = 0
        self.fail_on = fail_on

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        self.n += 1
        if self.fail_on and req.path.endswith(self.fail_on):
            return 400, {}, {"error": {"type": "illegal_argument_exception",
                                       "reason": "Connector URL is not matching the trusted connector endpoint regex"},
                             "status": 400}
        if req.path.endswith("/model_groups/_register"):
            return 200, {}, {"model_group_id": "group-1", "status": "CREATED"}
        if req.path.endswith("/connectors/_create"):
            return 200, {}, {"connector_id": f"conn-{self.n}"}
        if req.path.endswith("/models/_register"):
            return 200, {}, {"task_id": f"task-{self.n}", "status": "CREATED", "model_id": f"model-{self.n}"}
        if req.path.endswith("/_deploy"):
            return 200, {}, {"task_id": f"task-{self.n}", "task_type": "DEPLOY_MODEL", "status": "COMPLETED"}
        return 200, {}, {"acknowledged": True}


def _cli(args: list[str], env: dict[str, str] | None = None):
    from latentsearch.cli import app

    return CliRunner().invoke(app, ["opensearch-setup", *args], env=env)


def test_setup_sends_the_plan_in_order_with_captured_ids(home: Path) -> None:
    env = {"LATENTSEARCH_BACKEND__AUTH__KIND": "basic", "LATENTSEARCH_BACKEND__AUTH__USERNAME": "admin",
           "LATENTSEARCH_BACKEND__AUTH__PASSWORD": "Str0ng!pass"}
    args = ["--latent-types", "disease,study_type", "--text-type", "biomedical abstract", "--json"]
    with LoopbackServer(FakeMLCommons()) as server:
        result = _cli(["--url", server.url, *args], env=env)
        assert result.exit_code == 0, result.output
        reqs = server.recorded()
    expected = plan(MLCommonsConfig(entities=EntitySchema(text_type="biomedical abstract",
                                                          latent_types=["disease", "study_type"])))
    assert [(r.method, r.path) for r in reqs] == [
        ("PUT", "/_cluster/settings"), ("POST", "/_plugins/_ml/model_groups/_register"),
        ("POST", "/_plugins/_ml/connectors/_create"), ("POST", "/_plugins/_ml/models/_register"),
        ("POST", "/_plugins/_ml/models/model-4/_deploy"),
        ("POST", "/_plugins/_ml/connectors/_create"), ("POST", "/_plugins/_ml/models/_register"),
        ("POST", "/_plugins/_ml/models/model-7/_deploy"),
        ("POST", "/_plugins/_ml/connectors/_create"), ("POST", "/_plugins/_ml/models/_register"),
        ("POST", "/_plugins/_ml/models/model-10/_deploy"),
        ("PUT", "/_ingest/pipeline/latentsearch-ingest"), ("PUT", "/_search/pipeline/latentsearch-query"),
    ]
    auth = "Basic " + base64.b64encode(b"admin:Str0ng!pass").decode()
    assert all(r.headers.get("authorization") == auth for r in reqs)
    sent = [r.json() for r in reqs]
    assert sent[0] == expected[0].body and sent[1] == expected[1].body and sent[2] == expected[2].body
    # ids returned by earlier calls are filled into later bodies
    assert sent[3]["connector_id"] == "conn-3" and sent[3]["model_group_id"] == "group-1"
    assert sent[4] is None
    ingest = sent[11]["processors"]
    assert [p["ml_inference"]["model_id"] for p in ingest] == ["model-4", "model-7", "model-10"]
    assert sent[12]["request_processors"][0]["ml_inference"]["model_id"] == "model-4"
    assert json.loads(result.stdout)["ids"]["mentions_model_id"] == "model-10"


def test_setup_stops_at_the_first_error_with_the_cluster_reason(home: Path) -> None:
    with LoopbackServer(FakeMLCommons(fail_on="/connectors/_create")) as server:
        result = _cli(["--url", server.url, "--models", "embeddings"])
        reqs = server.recorded()
    assert result.exit_code == 1
    assert "trusted connector endpoint regex" in result.output and "HTTP 400" in result.output
    assert [r.path for r in reqs] == ["/_cluster/settings", "/_plugins/_ml/model_groups/_register",
                                      "/_plugins/_ml/connectors/_create"]


def test_dry_run_prints_the_plan_and_sends_nothing(home: Path) -> None:
    with LoopbackServer(FakeMLCommons()) as server:
        result = _cli(["--url", server.url, "--dry-run", "--json", "--server-url", "http://models.internal:9000"])
        assert not server.recorded()
    assert result.exit_code == 0, result.output
    steps = [Step.model_validate(s) for s in json.loads(result.stdout)]
    assert steps == plan(MLCommonsConfig(server_url="http://models.internal:9000"))
    connector = steps[2].body
    assert connector["actions"][0]["url"] == "http://models.internal:9000/v1/embeddings"  # type: ignore[index]
    text = _cli(["--dry-run", "--no-cluster-settings"]).stdout
    assert text.startswith("# 1. model group\nPOST /_plugins/_ml/model_groups/_register\n")


def test_api_key_goes_into_the_credential_and_a_bearer_header() -> None:
    cfg = MLCommonsConfig(api_key="sekret")
    connector = next(s for s in plan(cfg) if s.name == "embeddings connector").body
    assert connector["credential"] == {"api_key": "sekret"}  # type: ignore[index]
    assert connector["actions"][0]["headers"]["Authorization"] == "Bearer ${credential.api_key}"  # type: ignore[index]
    plain = next(s for s in plan(MLCommonsConfig()) if s.name == "embeddings connector").body
    assert "Authorization" not in plain["actions"][0]["headers"]  # type: ignore[index]


class TaskOnlyMLCommons(FakeMLCommons):
    """Registration answers with a task id only; the model id appears on the task once it completes."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: dict[str, int] = {}

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        if req.path.endswith("/models/_register"):
            self.n += 1
            return 200, {}, {"task_id": f"task-{self.n}", "status": "CREATED"}
        if req.path.startswith("/_plugins/_ml/tasks/"):
            task = req.path.rsplit("/", 1)[1]
            self.polls[task] = self.polls.get(task, 0) + 1
            if self.polls[task] < 2:
                return 200, {}, {"state": "RUNNING", "task_type": "REGISTER_MODEL"}
            return 200, {}, {"state": "COMPLETED", "model_id": f"model-of-{task}"}
        return super().__call__(req)


def test_setup_waits_for_registration_tasks() -> None:
    from latentsearch.mappings.ml_commons import apply

    with LoopbackServer(TaskOnlyMLCommons()) as server:
        from opensearchpy import OpenSearch

        from latentsearch.mappings.ml_commons import opensearch_sender

        client = OpenSearch(hosts=[server.url])
        ids = apply(plan(MLCommonsConfig(models=["embeddings"])), opensearch_sender(client), task_wait_s=0.01)
        reqs = server.recorded()
    assert ids["embeddings_model_id"] == "model-of-task-4"
    assert [r.path for r in reqs if "/tasks/" in r.path] == ["/_plugins/_ml/tasks/task-4"] * 2
    assert reqs[-3].path == "/_plugins/_ml/models/model-of-task-4/_deploy"
