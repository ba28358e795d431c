"""Conformance oracle for the Elasticsearch backend: request bodies against the official Elasticsearch
OpenAPI document (the subset vendored in tests/vendor/elasticsearch-api-spec/, Apache-2.0).

The OpenSearch validator (opensearch_spec.py) is reused as is: the same discriminator dispatch and
the same strict pass that closes every complete object schema, so a misspelled clause or an unknown
key is an error here too (the generated Elasticsearch spec, like OpenSearch's, never says
`additionalProperties: false`). What differs is only the loading: one JSON document (OpenAPI 3.0)
instead of a folder of YAML files, and operations named by `operationId` without the upstream
`-N` suffix and with dots (`indices-create` -> `indices.create`, `search-3` -> `search`).

    v = load_es_validator()
    v.validate_request_body("indices.create", body)   # -> list of errors, [] when valid
    v.validate_bulk(lines) / v.validate_msearch(lines) / v.validate_query(clause)
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.oracles.opensearch_spec import _HTTP_METHODS, SpecValidator, _esc

ES_URI = "https://elasticsearch-api-spec.invalid/openapi.json"
SPEC_FILE = Path(__file__).resolve().parents[1] / "vendor" / "elasticsearch-api-spec" / "elasticsearch-openapi-subset.json"
QUERY_CONTAINER = f"{ES_URI}#/components/schemas/_types.query_dsl.QueryContainer"
TYPE_MAPPING = f"{ES_URI}#/components/schemas/_types.mapping.TypeMapping"
BULK_OPERATION = f"{ES_URI}#/components/schemas/_global.bulk.OperationContainer"
MSEARCH_HEADER = f"{ES_URI}#/components/schemas/_global.msearch.MultisearchHeader"
MSEARCH_BODY = f"{ES_URI}#/components/schemas/_global.search._types.SearchRequestBody"


class ElasticsearchSpecValidator(SpecValidator):
    """SpecValidator over the Elasticsearch OpenAPI document."""

    def __init__(self, spec_file: str | Path = SPEC_FILE, *, strict: bool = True):
        self.root = Path(spec_file)
        self.strict = strict
        self.docs = {ES_URI: copy.deepcopy(_parsed(str(self.root.resolve())))}
        self.stats = {"discriminators": 0, "closed_flat": 0, "closed_unevaluated": 0}
        self.errata_applied: list[str] = []
        self._apply_errata()
        self._rewrite_discriminators()
        if strict:
            self._close_complete_objects()
        self.registry = Registry().with_resources(
            (uri, Resource(contents=doc, specification=DRAFT202012)) for uri, doc in self.docs.items())
        self.operations = self._index_operations()
        self._validators = {}

    def _schema_roots(self):
        """The components, plus request-body schemas written inline in an operation (indices.create's)."""
        yield from super()._schema_roots()
        from tests.oracles.opensearch_spec import _walk_schema

        for uri, doc in self.docs.items():
            for path, item in doc["paths"].items():
                for method, op in item.items():
                    for ctype, media in (op.get("requestBody", {}).get("content") or {}).items():
                        if isinstance(media.get("schema"), dict):
                            ptr = f"/paths/{_esc(path)}/{method}/requestBody/content/{_esc(ctype)}/schema"
                            yield from _walk_schema(uri, ptr, media["schema"])

    def _apply_errata(self) -> None:
        """Where the generated OpenAPI document says less than Elasticsearch accepts (each is listed
        in ERRATA with its reason; the negative controls in the tests still hold with them)."""
        schemas = self.docs[ES_URI]["components"]["schemas"]
        # 1. Scalar unions are `oneOf` although their branches overlap (FieldValue: long and double
        #    are both `number`; string and nullable string): every value would match two branches.
        for _uri, _ptr, node in list(self._schema_roots()):
            branches = node.get("oneOf")
            if isinstance(branches, list) and branches and all(
                    isinstance(b, dict) and set(b) <= {"type", "nullable", "description", "format"} for b in branches):
                node["anyOf"] = node.pop("oneOf")
                self.errata_applied.append("scalar oneOf -> anyOf")
        # 2. A mapping property without `type` is an object (ES: "type defaults to object"); the
        #    Property discriminator has no default, so `{"properties": {...}}` would need a type.
        prop = schemas["_types.mapping.Property"]
        prop["discriminator"]["x-default"] = "object"
        self.errata_applied.append("Property discriminator default: object")
        # 3. `terms` takes the field as a key (`{"terms": {"f": [...]}}`); the generator drops that
        #    field map (TS `@behavior AdditionalProperty`), leaving only boost/_name.
        schemas["_types.query_dsl.TermsQuery"] = {
            "allOf": [{"$ref": "#/components/schemas/_types.query_dsl.QueryBase"}],
            "type": "object",
            "properties": {"boost": True, "_name": True},
            "additionalProperties": {"anyOf": [
                {"type": "array", "items": {"$ref": "#/components/schemas/_types.FieldValue"}},
                {"type": "object", "properties": {"index": {"type": "string"}, "id": {"type": "string"},
                                                  "path": {"type": "string"}, "routing": {"type": "string"}},
                 "required": ["index", "id", "path"], "additionalProperties": False},
            ]},
            "minProperties": 1,
        }
        self.errata_applied.append("TermsQuery field map")
        # 4. The vendored document is the serverless flavour, which omits the stateful-only shard
        #    settings; a self-managed cluster (what the backend targets) takes them.
        settings = schemas["indices._types.IndexSettings"].setdefault("properties", {})
        for name in ("number_of_shards", "number_of_replicas"):
            settings.setdefault(name, {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]})
        self.errata_applied.append("IndexSettings number_of_shards/number_of_replicas (stateful)")
        # 5. RangeQuery is a `oneOf` of untyped/date/number/term ranges whose shapes overlap
        #    (`{"gte": 0}` fits three of them); Elasticsearch picks by the field's type.
        rng = schemas["_types.query_dsl.RangeQuery"]
        if "oneOf" in rng:
            rng["anyOf"] = rng.pop("oneOf")
            self.errata_applied.append("RangeQuery oneOf -> anyOf")

    def _index_operations(self) -> dict[str, list[str]]:
        ops: dict[str, list[str]] = {}
        for uri, doc in self.docs.items():
            for path, item in doc["paths"].items():
                for method in _HTTP_METHODS:
                    op = item.get(method)
                    if isinstance(op, dict) and "requestBody" in op:
                        name = re.sub(r"-\d+$", "", op["operationId"]).replace("-", ".")
                        ops.setdefault(name, []).append(f"{uri}#/paths/{_esc(path)}/{method}/requestBody")
        return ops

    def validate_query(self, clause: Any) -> list[str]:
        return self._validate(QUERY_CONTAINER, clause)

    def validate_schema(self, ref: str, instance: Any) -> list[str]:
        return self._validate(ref if ref.startswith(ES_URI) else f"{ES_URI}#/components/schemas/{ref}", instance)

    def validate_bulk(self, lines: list[dict[str, Any]]) -> list[str]:
        """A `_bulk` NDJSON body as its list of lines: action lines (index/create/delete/update), each
        followed by its document except delete. The spec's array schema cannot pair lines (and its
        item `oneOf` has a catch-all `object` branch), so each action line is checked against
        OperationContainer and each document line is required to be an object."""
        errors: list[str] = []  # not the whole array: its item `oneOf` matches every action line twice
        i = 0
        while i < len(lines):
            line = lines[i]
            errors += [f"line {i}: {e}" for e in self._validate(BULK_OPERATION, line)]
            action = next(iter(line)) if isinstance(line, dict) and len(line) == 1 else None
            if action in ("index", "create", "update"):
                if i + 1 >= len(lines) or not isinstance(lines[i + 1], dict):
                    errors.append(f"line {i}: `{action}` needs a document line after it")
                i += 2
            else:
                i += 1
        return errors

    def validate_msearch(self, lines: list[dict[str, Any]]) -> list[str]:
        errors: list[str] = []  # per line by position: an empty header `{}` matches both RequestItem branches
        if len(lines) % 2:
            errors.append(f"msearch needs header/body pairs; got {len(lines)} lines")
        for i, line in enumerate(lines):
            ref = MSEARCH_HEADER if i % 2 == 0 else MSEARCH_BODY
            errors += [f"line {i}: {e}" for e in self._validate(ref, line)]
        return errors


@functools.lru_cache(maxsize=1)
def _parsed(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=2)
def load_es_validator(strict: bool = True) -> ElasticsearchSpecValidator:
    """One validator per process."""
    return ElasticsearchSpecValidator(strict=strict)


def validate_wire_request(v: ElasticsearchSpecValidator, method: str, path: str, body: bytes) -> list[str]:
    """Errors of one recorded HTTP request's body, chosen by its method and path (no body: none)."""
    if not body.strip():
        return []
    parts = [p for p in path.split("/") if p]
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    op = parts[-1] if parts and parts[-1].startswith("_") else None
    if op == "_bulk":
        return v.validate_bulk(lines)
    if op == "_msearch":
        return v.validate_msearch(lines)
    group = {("PUT", None): "indices.create", ("POST", "_search"): "search", ("GET", "_search"): "search",
             ("POST", "_count"): "count", ("PUT", "_mapping"): "indices.put.mapping"}.get((method, op))
    if group is None:
        return [f"{method} {path}: no request-body schema is mapped for this call in validate_wire_request"]
    return v.validate_request_body(group, lines[0] if len(lines) == 1 else lines)
