"""Conformance oracle 1: validate request bodies against the official OpenSearch OpenAPI spec.

The spec (`tests/vendor/opensearch-api-spec/spec/`, Apache-2.0) is a set of OpenAPI 3.1 YAML files:
`namespaces/*.yaml` hold the operations (tagged with `x-operation-group`) and their
`components/requestBodies`; `schemas/*.yaml` hold component schemas. OpenAPI 3.1 schemas are JSON
Schema 2020-12, so `jsonschema` validates them once every file is registered in a `referencing`
registry under a URI that keeps the relative refs (`../schemas/_core.search.yaml#/...`) resolvable.

Two things the raw spec would get wrong, handled here once at load time:

* **`discriminator`** (OpenAPI-only; JSON Schema ignores it). It sits on `oneOf` unions such as the
  mapping `Property` (`propertyName: type`, `x-default: object`). Left to plain `oneOf`, a
  property is checked against ~50 branches and the error says only "not valid under any of the
  given schemas". It is rewritten into an `if/then/else` chain that dispatches on the
  discriminator value (`type: keyword` -> `KeywordProperty`, missing -> the `x-default` branch,
  unknown value -> an `enum` error listing the allowed values).
* **Unknown properties.** The spec almost never says `additionalProperties: false` (2 places,
  both in responses), so a misspelled clause such as `{"terrm": ...}` or an unknown mapping
  parameter would pass silently, although OpenSearch's parsers reject both. With `strict=True`
  (the default) every *complete* object schema that declares `properties` or `allOf` and says
  nothing about extra keys is closed. "Complete" matters: a schema used as an `allOf` member
  (e.g. `QueryBase`, `PropertyBase`) only describes part of an object, so it stays open and the
  schema that composes it is closed instead, over the union of the names its members declare
  (`additionalProperties: false` plus `true` stubs for inherited names: same meaning as
  `unevaluatedProperties: false`, which jsonschema evaluates by re-validating every subschema,
  a cost that compounds with nesting). Where the names depend on the instance (`if`, open
  members) `unevaluatedProperties: false` is used. For `oneOf`/`anyOf` members the union of the
  branches' names is allowed (oneOf's exclusivity rejects most keys of a non-matching branch).
  Open maps (`additionalProperties: {...}`, `patternProperties`, an explicit
  `unevaluatedProperties`) are left alone. The spec's own recorded request bodies (its test
  stories) validate under these rules, except three genuine spec gaps (see the tests).

Two **errata** are applied (`errata=True`, the default; listed in `ERRATA`). The RRF rank constant's
place (see ERRATA). And: the spec types the
search body's `search_pipeline` as a string only, but OpenSearch (>= 2.9) also takes an object
there, a *temporary* search pipeline for this request (docs: search-plugins/search-pipelines/
using-search-pipeline, "Using a temporary search pipeline for the current request"). With the
erratum the object form is accepted and validated against `SearchPipelineStructure`.

Public API: `SpecValidator(spec_dir).validate_request_body(operation_group, body) -> list[str]`,
`validate_query(clause)`, `validate_schema(ref, instance)`; `load_validator()` caches one
validator per process; `find_spec_dir()` locates the spec next to the repository.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE_URI = "https://opensearch-api-spec.invalid/spec/"
QUERY_CONTAINER = "schemas/_common.query_dsl.yaml#/components/schemas/QueryContainer"
TYPE_MAPPING = "schemas/_common.mapping.yaml#/components/schemas/TypeMapping"
MULTISEARCH_HEADER = "schemas/_core.msearch.yaml#/components/schemas/MultisearchHeader"
MULTISEARCH_BODY = "schemas/_core.msearch.yaml#/components/schemas/MultisearchBody"

_SCHEMA_MAP_KEYS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_SCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_KEYS = (
    "items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "not", "if", "then",
    "else", "propertyNames", "contains", "contentSchema",
)
_OPEN_KEYS = ("additionalProperties", "unevaluatedProperties", "patternProperties")
# (document, JSON pointer, expected original, replacement, why) -- checked, so a changed spec fails loudly
ERRATA: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
    (
        "namespaces/_core.yaml",
        "/components/requestBodies/search/content/application~1json/schema/properties/search_pipeline",
        {"type": "string"},
        {
            "description": "A named search pipeline, or a temporary one defined for this request only.",
            "oneOf": [
                {"type": "string"},
                {"$ref": "../schemas/search_pipeline._common.yaml#/components/schemas/SearchPipelineStructure"},
            ],
        },
        (
            "OpenSearch accepts a temporary search pipeline object in the search body (since 2.9); "
            "the spec only models the string form"
        ),
    ),
    (
        "schemas/search_pipeline._common.yaml",
        "/components/schemas/ScoreRankerCombination",
        {"type": "object", "required": ["technique"]},
        {
            "type": "object",
            "properties": {
                "technique": {"$ref": "#/components/schemas/ScoreRankerCombinationTechnique"},
                "rank_constant": {"type": "integer", "format": "int32", "minimum": 1},
                "parameters": {
                    "type": "object",
                    "properties": {"rank_constant": {"type": "integer", "format": "int32", "minimum": 1}},
                },
            },
            "required": ["technique"],
        },
        (
            "neural-search 2.19 reads the RRF rank constant from `combination.parameters.rank_constant` and "
            "silently uses 60 when it is given as `combination.rank_constant`, the only form the spec models "
            "(found on the real node: tests/test_opensearch_node.py::test_hybrid_query_with_search_pipeline)"
        ),
    ),
]

_OPEN = frozenset({"<open>"})  # sentinel of SpecValidator._property_closure
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

try:  # libyaml is ~5x faster on the 2.7 MB spec
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-python PyYAML
    _Loader = yaml.SafeLoader  # type: ignore[misc]


def find_spec_dir() -> Path | None:
    """`$OPENSEARCH_API_SPEC` when set, else the copy vendored in `tests/vendor/opensearch-api-spec`."""
    env = os.environ.get("OPENSEARCH_API_SPEC")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "vendor" / "opensearch-api-spec")
    for cand in candidates:
        if (cand / "spec" / "namespaces").is_dir():
            return cand
    return None


class SpecNotFound(LookupError):
    pass


class SpecValidator:
    """Validates request bodies against the OpenSearch OpenAPI spec (see module docstring)."""

    def __init__(self, spec_dir: str | Path, *, strict: bool = True, errata: bool = True):
        root = Path(spec_dir)
        if (root / "spec").is_dir():
            root = root / "spec"
        if not (root / "namespaces").is_dir():
            raise SpecNotFound(f"no OpenSearch API spec under {spec_dir} (expected spec/namespaces/*.yaml)")
        self.root = root
        self.strict = strict
        # parsed once per process; every validator rewrites its own copy
        self.docs: dict[str, Any] = copy.deepcopy(_parsed_spec(str(root.resolve())))
        # rewrites done at load: discriminators dispatched, objects closed by additionalProperties
        # (flattened allOf) or by unevaluatedProperties (instance-dependent compositions)
        self.stats = {"discriminators": 0, "closed_flat": 0, "closed_unevaluated": 0}
        self.errata_applied: list[str] = []
        if errata:
            self._apply_errata()
        self._rewrite_discriminators()
        if strict:
            self._close_complete_objects()
        self.registry: Registry = Registry().with_resources(
            (uri, Resource(contents=doc, specification=DRAFT202012)) for uri, doc in self.docs.items()
        )
        self.operations = self._index_operations()
        self._validators: dict[str, Draft202012Validator] = {}

    # ------------------------------------------------------------------ public API

    def operation_groups(self) -> list[str]:
        return sorted(self.operations)

    def request_body_schema_uri(self, operation_group: str, content_type: str | None = None) -> str:
        """The absolute `$ref` of the request-body schema of an `x-operation-group`."""
        if operation_group not in self.operations:
            raise KeyError(f"unknown x-operation-group {operation_group!r}")
        uris = set()
        for body_uri in self.operations[operation_group]:
            uri, request_body = self._resolve(BASE_URI, body_uri)
            while "$ref" in request_body:
                uri, request_body = self._resolve(uri, request_body["$ref"])
            content = request_body.get("content") or {}
            ctype = content_type or ("application/json" if "application/json" in content else next(iter(content)))
            if ctype not in content:
                raise KeyError(f"{operation_group}: no {ctype} request body (has {sorted(content)})")
            uris.add(f"{uri}/content/{_esc(ctype)}/schema")
        if not uris:
            raise KeyError(f"{operation_group!r} takes no request body in the spec")
        if len(uris) > 1:
            raise KeyError(f"{operation_group!r}: its operations disagree on the body schema: {sorted(uris)}")
        return uris.pop()

    def validate_request_body(self, operation_group: str, body: Any, *, content_type: str | None = None) -> list[str]:
        """Errors (empty when valid) of `body` as the request body of `operation_group`."""
        return self._validate(self.request_body_schema_uri(operation_group, content_type), body)

    def validate_schema(self, ref: str, instance: Any) -> list[str]:
        """Validate against a component, e.g. `schemas/_common.query_dsl.yaml#/components/schemas/X`."""
        return self._validate(urljoin(BASE_URI, ref), instance)

    def validate_query(self, clause: Any) -> list[str]:
        """One query clause against `_common.query_dsl:QueryContainer`."""
        return self.validate_schema(QUERY_CONTAINER, clause)

    def validate_msearch(self, lines: list[dict[str, Any]]) -> list[str]:
        """An msearch NDJSON body given as its list of lines (header, body, header, body, ...).

        Checks the whole list against the `msearch` request body and, since an array schema cannot
        say that even lines are headers and odd lines are bodies, each line against its own role."""
        errors = self.validate_request_body("msearch", lines, content_type="application/x-ndjson")
        if len(lines) % 2:
            errors.append(f"msearch needs header/body pairs; got {len(lines)} lines")
        for i, line in enumerate(lines):
            ref = MULTISEARCH_HEADER if i % 2 == 0 else MULTISEARCH_BODY
            errors += [f"line {i}: {e}" for e in self.validate_schema(ref, line)]
        return errors

    # ------------------------------------------------------------------ validation

    def _validate(self, uri: str, instance: Any) -> list[str]:
        validator = self._validators.get(uri)
        if validator is None:
            self._resolve(BASE_URI, uri)  # fail early and clearly on a bad ref
            validator = Draft202012Validator({"$ref": uri}, registry=self.registry)
            self._validators[uri] = validator
        return [_format(e) for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))]

    # ------------------------------------------------------------------ loading

    def _resolve(self, base: str, ref: str) -> tuple[str, Any]:
        uri = _join(base, ref)
        doc_uri, _, fragment = uri.partition("#")
        node = self.docs[doc_uri]
        for part in [p for p in fragment.split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return uri, node

    def _index_operations(self) -> dict[str, list[str]]:
        """x-operation-group -> URIs (with JSON pointer) of its operations' `requestBody`."""
        ops: dict[str, list[str]] = {}
        for uri, doc in self.docs.items():
            for path, path_item in ((doc or {}).get("paths") or {}).items():
                for method in _HTTP_METHODS:
                    op = path_item.get(method)
                    if isinstance(op, dict) and "x-operation-group" in op:
                        entry = ops.setdefault(op["x-operation-group"], [])
                        if "requestBody" in op:
                            entry.append(f"{uri}#/paths/{_esc(path)}/{method}/requestBody")
        return ops

    def _schema_roots(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(doc uri, json pointer, schema) for every schema position in every document."""
        for uri, doc in self.docs.items():
            comps = (doc or {}).get("components") or {}
            for name, schema in (comps.get("schemas") or {}).items():
                yield from _walk_schema(uri, f"/components/schemas/{_esc(name)}", schema)
            for section in ("requestBodies", "responses"):
                for name, item in (comps.get(section) or {}).items():
                    for ctype, media in (item.get("content") or {}).items():
                        if isinstance(media, dict) and isinstance(media.get("schema"), dict):
                            ptr = f"/components/{section}/{_esc(name)}/content/{_esc(ctype)}/schema"
                            yield from _walk_schema(uri, ptr, media["schema"])
            for name, param in (comps.get("parameters") or {}).items():
                if isinstance(param.get("schema"), dict):
                    yield from _walk_schema(uri, f"/components/parameters/{_esc(name)}/schema", param["schema"])

    def _discriminator_value(self, uri: str, schema: dict[str, Any], prop: str, depth: int = 0) -> list[Any] | None:
        """The enum/const values `schema` allows for `prop`, following $ref and allOf."""
        if depth > 20:
            return None
        if "$ref" in schema:
            target_uri, target = self._resolve(uri, schema["$ref"])
            found = self._discriminator_value(target_uri, target, prop, depth + 1)
            if found is not None:
                return found
        sub = (schema.get("properties") or {}).get(prop)
        if isinstance(sub, dict):
            if "const" in sub:
                return [sub["const"]]
            if "enum" in sub:
                return list(sub["enum"])
        for member in schema.get("allOf") or ():
            found = self._discriminator_value(uri, member, prop, depth + 1)
            if found is not None:
                return found
        return None

    def _apply_errata(self) -> None:
        for doc, pointer, expected, replacement, why in ERRATA:
            uri, node = self._resolve(BASE_URI, f"{doc}#{pointer}")
            if any(node.get(k) != v for k, v in expected.items()):
                raise AssertionError(f"spec erratum no longer applies at {uri} (found {node!r}); revisit ERRATA")
            node.clear()
            node.update(copy.deepcopy(replacement))
            self.errata_applied.append(f"{doc}#{pointer}: {why}")

    def _rewrite_discriminators(self) -> None:
        for uri, _ptr, node in list(self._schema_roots()):
            disc = node.get("discriminator")
            if not isinstance(disc, dict):
                continue
            branches = node.get("oneOf") or node.get("anyOf")
            prop = disc.get("propertyName")
            node.pop("discriminator")
            if not branches or not prop:
                continue
            dispatch: list[tuple[list[Any], dict[str, Any]]] = []
            mapping = disc.get("mapping") or {}
            if mapping:
                for value, ref in mapping.items():
                    dispatch.append(([value], {"$ref": ref}))
            else:
                for branch in branches:
                    values = self._discriminator_value(uri, branch, prop)
                    if values is None:
                        dispatch = []
                        break
                    dispatch.append((values, branch))
            all_values = [v for values, _ in dispatch for v in values]
            if not dispatch or len(all_values) != len(set(map(repr, all_values))):
                continue  # cannot dispatch unambiguously: keep the structural oneOf
            default = disc.get("x-default")
            # innermost: missing discriminator -> default branch (or required error); unknown -> enum error
            # (the enum-only leaves say nothing about other keys: `unevaluatedProperties: true` keeps
            # the strict pass from closing them)
            chain: dict[str, Any] = {
                "properties": {prop: {"enum": all_values}},
                "required": [prop],
                "unevaluatedProperties": True,
            }
            if default is not None:
                default_branch = next((b for values, b in dispatch if default in values), None)
                if default_branch is not None:
                    chain = {
                        "if": {"required": [prop]},
                        "then": {"properties": {prop: {"enum": all_values}}, "unevaluatedProperties": True},
                        "else": copy.deepcopy(default_branch),
                    }
            for values, branch in reversed(dispatch):
                chain = {
                    "if": {"properties": {prop: {"enum": values}}, "required": [prop]},
                    "then": copy.deepcopy(branch),
                    "else": chain,
                }
            node.pop("oneOf", None)
            node.pop("anyOf", None)
            node.update(chain)
            self.stats["discriminators"] += 1

    def _close_complete_objects(self) -> None:
        nodes: dict[str, dict[str, Any]] = {}
        children: dict[str, list[tuple[str, str]]] = {}  # key -> [(relation, child key)]
        for uri, ptr, node in self._schema_roots():
            key = f"{uri}#{ptr}"
            nodes[key] = node
        for key, node in nodes.items():
            uri = _doc_of(key)
            rels: list[tuple[str, str]] = []
            ptr = key.split("#", 1)[1]
            if "$ref" in node:
                target = _join(uri, node["$ref"])
                rels.append(("inplace", target if "#" in target else target + "#"))
            members = node.get("allOf") or ()
            # a lone allOf member with nothing beside it is an alias (`allOf: [$ref: X]`): in place
            alias = len(members) == 1 and not any(k in node for k in ("properties", "oneOf", "anyOf", "if", "$ref"))
            for i, _ in enumerate(members):
                rels.append(("inplace" if alias else "member", f"{uri}#{ptr}/allOf/{i}"))
            for kw in ("oneOf", "anyOf"):
                for i, _ in enumerate(node.get(kw) or ()):
                    rels.append(("branch", f"{uri}#{ptr}/{kw}/{i}"))
            if isinstance(node.get("if"), dict):  # a condition, never a full object description
                rels.append(("member", f"{uri}#{ptr}/if"))
            for kw in ("then", "else"):
                if isinstance(node.get(kw), dict):
                    rels.append(("branch", f"{uri}#{ptr}/{kw}"))
            children[key] = rels

        # partial = describes only part of an object (allOf member, or in place under a partial
        # schema / a schema with its own properties); propagated along the in-place relations
        partial: set[str] = set()
        todo: list[str] = []
        for key, rels in children.items():
            node = nodes[key]
            has_own = "properties" in node or any(k in node for k in _OPEN_KEYS)
            for relation, child in rels:
                if relation == "member" or has_own:
                    todo.append(child)
        while todo:
            key = todo.pop()
            if key in partial:
                continue
            partial.add(key)
            todo.extend(child for _, child in children.get(key, ()) if child not in partial)
        plan: list[tuple[dict[str, Any], Any]] = []
        for key, node in nodes.items():
            if key in partial or any(k in node for k in _OPEN_KEYS):
                continue
            if not ("properties" in node or "allOf" in node):
                continue
            types = node.get("type", "object")
            if "object" not in (types if isinstance(types, list) else [types]):
                continue
            plan.append((node, self._property_closure(_doc_of(key), node, set())))
        for node, names in plan:
            if names is _OPEN:
                continue
            if names is None:
                node["unevaluatedProperties"] = False
                self.stats["closed_unevaluated"] += 1
            else:
                # same meaning, much cheaper: jsonschema evaluates `unevaluatedProperties` by
                # re-validating every in-place subschema, which compounds with nesting depth
                props = node.setdefault("properties", {})
                for name in sorted(names - props.keys()):
                    props[name] = True
                node["additionalProperties"] = False
                self.stats["closed_flat"] += 1

    def _property_closure(self, uri: str, node: dict[str, Any], seen: set[str]) -> Any:
        """All property names an object schema declares through `properties`, `$ref`, `allOf` and
        (approximately) `oneOf`/`anyOf`; `_OPEN` when a member already accepts any key; None when a
        conditional keyword makes the set depend on the instance."""
        if any(k in node for k in ("if", "dependentSchemas")):
            return None
        if "additionalProperties" in node or "patternProperties" in node:
            return _OPEN  # an open member: every key is evaluated by it, nothing to close
        if "unevaluatedProperties" in node and node["unevaluatedProperties"] is not True:
            return None
        names = set(node.get("properties") or ())
        # oneOf/anyOf: the union of the branches' names. Looser than `unevaluatedProperties` only for
        # a key that belongs to a branch that did not match (oneOf's exclusivity rejects most of
        # those anyway). A branch's own `unevaluatedProperties: true` defers to this schema.
        for branch in (node.get("oneOf") or []) + (node.get("anyOf") or []):
            if not isinstance(branch, dict):
                return None
            sub = self._property_closure(uri, branch, seen)
            if sub is None or sub is _OPEN:
                return sub
            names |= sub
        refs = [node["$ref"]] if "$ref" in node else []
        for member in node.get("allOf") or ():
            if not isinstance(member, dict):
                return None
            if "$ref" in member and len(member) == 1:
                refs.append(member["$ref"])
                continue
            sub = self._property_closure(uri, member, seen)
            if sub is None or sub is _OPEN:
                return sub
            names |= sub
        for ref in refs:
            target_uri, target = self._resolve(uri, ref)
            if target_uri in seen:
                continue
            sub = self._property_closure(_doc_of(target_uri), target, seen | {target_uri})
            if sub is None or sub is _OPEN:
                return sub
            names |= sub
        return names


@functools.lru_cache(maxsize=2)
def _parsed_spec(root: str) -> dict[str, Any]:
    """The spec's YAML files parsed once per process (a safe loader); callers deep-copy it."""
    docs = {}
    for path in sorted(Path(root).rglob("*.yaml")):
        with path.open("rb") as fh:
            docs[BASE_URI + path.relative_to(root).as_posix()] = yaml.load(fh, Loader=_Loader)  # SafeLoader
    return docs


def _walk_schema(uri: str, ptr: str, schema: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield uri, ptr, schema
    for key in _SCHEMA_MAP_KEYS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, child in sub.items():
                yield from _walk_schema(uri, f"{ptr}/{key}/{_esc(name)}", child)
    for key in _SCHEMA_LIST_KEYS:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, child in enumerate(sub):
                yield from _walk_schema(uri, f"{ptr}/{key}/{i}", child)
    for key in _SCHEMA_KEYS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield from _walk_schema(uri, f"{ptr}/{key}", sub)


def _esc(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def _doc_of(uri: str) -> str:
    return uri.split("#", 1)[0]


@functools.cache
def _join(base: str, ref: str) -> str:
    """urljoin for refs (memoised: the spec has ~10k refs over a few hundred distinct targets)."""
    if ref.startswith("#"):
        return _doc_of(base) + ref
    return urljoin(base, ref)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(error: ValidationError) -> str:
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    message = error.message
    if error.validator in ("oneOf", "anyOf") and error.context:
        # the branch that got furthest usually names the real problem
        deepest = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.message)))
        inner = "/" + "/".join(str(p) for p in deepest.absolute_path)
        message = f"{_short(error.instance)} matches no {error.validator} branch; closest: at {inner}: {deepest.message}"
    elif len(message) > 300:
        message = message[:297] + "..."
    schema_path = re.sub(r"(?:else/){2,}", lambda m: f"else/*{m.group(0).count('/')}/", "/".join(
        str(p) for p in error.absolute_schema_path
    ))
    return f"at {where}: {message} [schema: {schema_path}]"


@functools.lru_cache(maxsize=4)
def load_validator(spec_dir: str | None = None, strict: bool = True, errata: bool = True) -> SpecValidator:
    """One validator per process (loading and rewriting the spec takes about a second)."""
    found = Path(spec_dir) if spec_dir else find_spec_dir()
    if found is None:
        raise SpecNotFound(
            "OpenSearch API spec not found in tests/vendor/opensearch-api-spec (or $OPENSEARCH_API_SPEC)"
        )
    return SpecValidator(found, strict=strict, errata=errata)
