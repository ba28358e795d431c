"""OpenSearch ML Commons wiring: the model server as remote models, called by ingest and search pipelines.

The plan, applied in order by `latentsearch opensearch-setup` (each body validated against the
official OpenSearch API spec in the tests):

1. cluster settings: trust the model server's URL (`trusted_connector_endpoints_regex`), allow
   private IPs (the server runs beside the cluster), run remote models on any node;
2. one model group `latentsearch`;
3. per model (embeddings, extract, mentions): an `http` connector whose one `predict` action calls
   the server, a remote model registered on it, and its deployment;
4. an ingest pipeline whose `ml_inference` processors fill `vector`, `latent.<type>` and `mentions`
   server-side, so any client (Logstash, Data Prepper, curl) gets latentsearch's enrichment;
5. a search pipeline whose `ml_inference` request processor rewrites a `match` on `text` into a k-NN
   query on `vector` (query_template), so plain-text queries search the dense field.

Wire contract with the model server (`latentsearch serve`, onnx_export/serve/schemas.py): `ml_inference`
calls a remote model once per document, so every request carries one text. ML Commons JSON-encodes each
mapped document value before substituting `${parameters.<name>}`, hence the unquoted placeholders:

    POST /v1/embeddings {"model": str, "input": str}  -> {"data": [{"embedding": [float, ...]}], ...}
    POST /extract       {"texts": [str], "text_type": str, "types": [{"name", "description"?, "options"?}]}
                                                      -> {"results": [{"latent": {"<type>": [str, ...]}}], ...}
    POST /mentions      {"texts": [str]}              -> {"results": [{"mentions": [{"start", "end", "text",
                                                                                    "label", "vector"}]}], ...}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from latentsearch.config import EntitySchema

ModelKey = Literal["embeddings", "extract", "mentions"]
MODEL_KEYS: tuple[ModelKey, ...] = ("embeddings", "extract", "mentions")
DEFAULT_SERVER_URL = "http://latentsearch:8080"  # the model server's service name in docker/compose.yaml
DEFAULT_INGEST_PIPELINE = "latentsearch-ingest"
DEFAULT_SEARCH_PIPELINE = "latentsearch-query"
MODEL_GROUP = "latentsearch"


class MLCommonsConfig(BaseModel):
    """What `opensearch-setup` creates and how the cluster reaches the model server."""

    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(DEFAULT_SERVER_URL, description="Model server base URL as the *cluster* sees it")
    api_key: str | None = Field(None, description="The model server's API key (sent as a Bearer token)")
    embedder: str = Field("all-MiniLM-L6-v2", description="Model name passed to /v1/embeddings")
    entities: EntitySchema = Field(default_factory=EntitySchema)
    models: list[ModelKey] = Field(default_factory=lambda: list(MODEL_KEYS))
    ingest_pipeline: str = DEFAULT_INGEST_PIPELINE
    search_pipeline: str = DEFAULT_SEARCH_PIPELINE
    k: int = Field(10, ge=1, le=10_000, description="k of the k-NN query the search pipeline writes")
    extract_timeout_s: int = Field(120, ge=1, le=3_600, description="Read timeout of the extract connector: an "
                                   "LLM call per document, seconds on CPU (ML Commons' default is 30 s)")
    cluster_settings: bool = Field(True, description="Also PUT the ML Commons cluster settings")

    @property
    def active_models(self) -> list[ModelKey]:
        """`models`, minus `extract` when the entity schema has no latent types (nothing to extract)."""
        return [m for m in self.models if m != "extract" or self.entities.latent_types]


class Step(BaseModel):
    """One REST call of the plan. `{name}` placeholders in `path`/`body` are filled from earlier captures."""

    model_config = ConfigDict(extra="forbid")

    name: str
    method: Literal["GET", "PUT", "POST", "DELETE"]
    path: str
    operation_group: str = Field(description="x-operation-group of the call in the OpenSearch API spec")
    body: dict[str, Any] | None = None
    capture: dict[str, str] = Field(default_factory=dict,
                                    description="placeholder name -> key of the response to read it from")


# ------------------------------------------------------------------ bodies


def _headers(cfg: MLCommonsConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = "Bearer ${credential.api_key}"
    return headers


def trusted_endpoint_regex(server_url: str) -> str:
    """A regex matching exactly the server's origin (and any path under it)."""
    origin = re.match(r"^(https?://[^/]+)", server_url.rstrip("/"))
    if not origin:
        raise ValueError(f"server URL must start with http:// or https://, got {server_url!r}")
    return "^" + re.escape(origin.group(1)) + "/.*$"


def cluster_settings_body(cfg: MLCommonsConfig) -> dict[str, Any]:
    """Persistent ML Commons settings so connectors may call the model server."""
    return {
        "persistent": {
            "plugins.ml_commons.trusted_connector_endpoints_regex": [trusted_endpoint_regex(cfg.server_url)],
            "plugins.ml_commons.connector.private_ip_enabled": True,  # the server is on the cluster's network
            "plugins.ml_commons.only_run_on_ml_node": False,  # remote models need no dedicated ML node
        }
    }


def model_group_body() -> dict[str, Any]:
    return {"name": MODEL_GROUP, "description": "latentsearch model server (embeddings, latent entities, mentions)"}


def connector_body(key: ModelKey, cfg: MLCommonsConfig) -> dict[str, Any]:
    """The `http` connector for one server endpoint: one `predict` action with a request-body template.

    The `ml_inference` processor hands a string field to the template JSON-escaped but NOT quoted (ML Commons
    2.19.1, checked on a real node by tests/test_opensearch_node.py), so a text goes in as `"${parameters.x}"`."""
    base = cfg.server_url.rstrip("/")
    if key == "embeddings":
        parameters: dict[str, Any] = {"model": cfg.embedder}
        url, template = f"{base}/v1/embeddings", '{ "model": "${parameters.model}", "input": "${parameters.input}" }'
        what = f"dense vectors ({cfg.embedder}, OpenAI-compatible /v1/embeddings)"
    elif key == "extract":
        types = [t.model_dump(exclude_none=True) for t in cfg.entities.latent_types]
        parameters = {"text_type": json.dumps(cfg.entities.text_type), "types": json.dumps(types)}
        url = f"{base}/extract"
        template = '{ "texts": ["${parameters.text}"], "text_type": ${parameters.text_type}, "types": ${parameters.types} }'
        what = "latent entities (LentEx) for the index's entity schema"
    else:
        parameters = {}
        url, template = f"{base}/mentions", '{ "texts": ["${parameters.text}"] }'
        what = "entity mentions with type-aware vectors"
    body: dict[str, Any] = {
        "name": f"latentsearch-{key}",
        "description": f"latentsearch model server: {what}",
        "version": 1,
        "protocol": "http",
        "parameters": parameters,
        "credential": {"api_key": cfg.api_key or "unused"},  # required by the API; only sent when set
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": url,
            "headers": _headers(cfg),
            "request_body": template,
        }],
    }
    if key == "extract":  # generation on a CPU server outlasts the default read timeout under a bulk's parallel calls
        body["client_config"] = {"read_timeout": cfg.extract_timeout_s}
    return body


def register_model_body(key: ModelKey, cfg: MLCommonsConfig, model_group_id: str, connector_id: str) -> dict[str, Any]:
    return {
        "name": f"latentsearch-{key}",
        "function_name": "remote",
        "model_group_id": model_group_id,
        "description": connector_body(key, cfg)["description"],
        "connector_id": connector_id,
    }


def ml_inference_processors(cfg: MLCommonsConfig, model_ids: dict[str, str]) -> list[dict[str, Any]]:
    """The ingest pipeline's `ml_inference` processors, one per active model, filling the index's fields."""
    processors: list[dict[str, Any]] = []
    for key in cfg.active_models:
        if key == "embeddings":
            inputs, outputs = {"input": "text"}, {"vector": "data[0].embedding"}
        elif key == "extract":
            inputs = {"text": "text"}
            outputs = {f"latent.{t.name}": f"results[0].latent.{t.name}" for t in cfg.entities.latent_types}
        else:
            inputs, outputs = {"text": "text"}, {"mentions": "results[0].mentions"}
        processors.append({"ml_inference": {
            "tag": f"latentsearch-{key}",
            "description": f"{key} from the latentsearch model server",
            "model_id": model_ids[key],
            "function_name": "remote",
            "input_map": [inputs],
            "output_map": [outputs],
            "ignore_missing": key != "embeddings",  # a chunk without text still fails loudly on the vector
        }})
    return processors


def ingest_pipeline_body(cfg: MLCommonsConfig, model_ids: dict[str, str]) -> dict[str, Any]:
    return {
        "description": "latentsearch enrichment: dense vector, latent entities and mentions from the model server",
        "processors": ml_inference_processors(cfg, model_ids),
    }


def search_pipeline_body(cfg: MLCommonsConfig, embeddings_model_id: str) -> dict[str, Any]:
    """A request processor that embeds the text of `{"match": {"text": {"query": ...}}}` and replaces the
    query by a k-NN query on `vector` (`query_template`, `${query_vector}` filled from the model output).
    The template replaces the whole request body, so the request's own `size`/`_source` are dropped: a search
    through the pipeline returns up to `cfg.k` hits (seen on a real 2.19.1 node)."""
    template = {"query": {"knn": {"vector": {"vector": "${query_vector}", "k": cfg.k}}},
                "_source": {"excludes": ["vector", "mentions.vector"]}}
    # the placeholder must be inserted as a JSON array, not a string
    query_template = json.dumps(template).replace('"${query_vector}"', "${query_vector}")
    return {
        "description": "latentsearch: plain-text match on `text` -> k-NN on `vector` (model server embeddings)",
        "request_processors": [{"ml_inference": {
            "tag": "latentsearch-query-embedding",
            "description": "embed the query text with the model server",
            "model_id": embeddings_model_id,
            "function_name": "remote",
            "input_map": [{"input": "query.match.text.query"}],
            "output_map": [{"query_vector": "data[0].embedding"}],
            "query_template": query_template,
        }}],
    }


# ------------------------------------------------------------------ the plan


def plan(cfg: MLCommonsConfig) -> list[Step]:
    """Every call of the setup, in order. Ids created on the way are `{placeholders}` until run."""
    steps: list[Step] = []
    if cfg.cluster_settings:
        steps.append(Step(name="cluster settings", method="PUT", path="/_cluster/settings",
                          operation_group="cluster.put_settings", body=cluster_settings_body(cfg)))
    steps.append(Step(name="model group", method="POST", path="/_plugins/_ml/model_groups/_register",
                      operation_group="ml.register_model_group", body=model_group_body(),
                      capture={"model_group_id": "model_group_id"}))
    for key in cfg.active_models:
        steps.append(Step(name=f"{key} connector", method="POST", path="/_plugins/_ml/connectors/_create",
                          operation_group="ml.create_connector", body=connector_body(key, cfg),
                          capture={f"{key}_connector_id": "connector_id"}))
        steps.append(Step(name=f"{key} model", method="POST", path="/_plugins/_ml/models/_register",
                          operation_group="ml.register_model",
                          body=register_model_body(key, cfg, "{model_group_id}", f"{{{key}_connector_id}}"),
                          capture={f"{key}_model_id": "model_id"}))
        steps.append(Step(name=f"{key} deploy", method="POST", path=f"/_plugins/_ml/models/{{{key}_model_id}}/_deploy",
                          operation_group="ml.deploy_model"))
    ids = {k: f"{{{k}_model_id}}" for k in cfg.active_models}
    steps.append(Step(name="ingest pipeline", method="PUT", path=f"/_ingest/pipeline/{cfg.ingest_pipeline}",
                      operation_group="ingest.put_pipeline", body=ingest_pipeline_body(cfg, ids)))
    if "embeddings" in cfg.active_models:
        steps.append(Step(name="search pipeline", method="PUT", path=f"/_search/pipeline/{cfg.search_pipeline}",
                          operation_group="search_pipeline.put",
                          body=search_pipeline_body(cfg, ids["embeddings"])))
    return steps


def fill(value: Any, ids: dict[str, str]) -> Any:
    """Replace `{placeholder}` strings (exact or inside a path) with captured ids."""
    if isinstance(value, str):
        return re.sub(r"\{([a-z_]+_id)\}", lambda m: ids.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


class SetupError(RuntimeError):
    pass


def _await_task(send: Callable[[str, str, dict[str, Any] | None], dict[str, Any]], response: dict[str, Any],
                key: str, attempts: int, wait_s: float) -> dict[str, Any]:
    """Clusters that answer a registration with only a `task_id` report the id on the task when it completes."""
    import time

    task: dict[str, Any] = {}
    for _ in range(attempts):
        task = send("GET", f"/_plugins/_ml/tasks/{response['task_id']}", None) or {}
        if key in task:
            return {**response, key: task[key]}
        if task.get("state") in ("FAILED", "COMPLETED_WITH_ERROR"):
            raise SetupError(f"ML task {response['task_id']} failed: {json.dumps(task)[:300]}")
        time.sleep(wait_s)
    raise SetupError(f"ML task {response['task_id']} did not report {key!r} in time: {json.dumps(task)[:300]}")


_EXISTING_GROUP = re.compile(r"already being used by a model group with ID: ([A-Za-z0-9_-]+)")


def apply(steps: Sequence[Step], send: Callable[[str, str, dict[str, Any] | None], dict[str, Any]],
          on_step: Callable[[Step, dict[str, Any]], None] | None = None, *, task_attempts: int = 30,
          task_wait_s: float = 1.0) -> dict[str, str]:
    """Run the steps with `send(method, path, body) -> response`; returns the captured ids. Safe to re-run:
    the model group of an earlier run is reused (connectors and models are registered anew, the pipelines are
    overwritten to use them)."""
    ids: dict[str, str] = {}
    for step in steps:
        path, body = fill(step.path, ids), fill(step.body, ids)
        missing = re.findall(r"\{([a-z_]+_id)\}", json.dumps([path, body]))
        if missing:
            raise SetupError(f"step {step.name!r} needs {missing}, which no earlier step returned")
        try:
            response = send(step.method, path, body) or {}
        except SetupError as err:
            # re-running setup: ML Commons refuses a second model group of the same name and names the first
            existing = _EXISTING_GROUP.search(str(err)) if path.endswith("/model_groups/_register") else None
            if existing is None:
                raise
            response = {"model_group_id": existing.group(1), "status": "EXISTING"}
        for key in step.capture.values():
            if key not in response and "task_id" in response:
                response = _await_task(send, response, key, task_attempts, task_wait_s)
        for placeholder, key in step.capture.items():
            if key not in response:
                raise SetupError(f"step {step.name!r}: the response has no {key!r}: {json.dumps(response)[:300]}")
            ids[placeholder] = str(response[key])
        if on_step:
            on_step(step, response)
    return ids


def opensearch_sender(client: Any) -> Callable[[str, str, dict[str, Any] | None], dict[str, Any]]:
    """`send` over an opensearch-py client (auth, TLS and retries as configured for the backend)."""
    from opensearchpy.exceptions import TransportError

    def send(method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return client.transport.perform_request(method, path, body=body)
        except TransportError as err:
            raise SetupError(f"{method} {path} failed with HTTP {err.status_code}: {str(err.info)[:500]}") from None

    return send
