"""How an OpenSearch mapping becomes LanceDB tables.

Every mapped leaf field becomes one column. Scalar fields are stored as *lists* (OpenSearch lets
any field hold an array, and `term`/`range`/`exists` then mean "any value"), vectors as
fixed-size float32 lists, `nested` objects as rows of a side table keyed by the parent `_id`.
The original document is kept as `_source` JSON without its vectors (they live in their columns).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from latentsearch.backends.base import BackendError
from latentsearch.backends.embedded.analysis import ANALYZERS

_INT_TYPES = {"integer", "long", "short", "byte", "unsigned_long", "token_count"}
_FLOAT_TYPES = {"float", "double", "half_float", "scaled_float"}
_STRING_TYPES = {"keyword", "text", "match_only_text", "constant_keyword", "wildcard"}
SUPPORTED_TYPES = _INT_TYPES | _FLOAT_TYPES | _STRING_TYPES | {"boolean", "date", "knn_vector"}
SPACES = {"l2", "cosinesimil", "innerproduct", "l1", "linf"}


class MapperParsingError(BackendError):
    def __init__(self, message: str):
        super().__init__(message, status=400, error_type="mapper_parsing_exception")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One indexed leaf field. `source_path` differs from `path` for multi-fields (title.keyword)."""

    path: str
    type: str
    source_path: str
    column: str
    dimension: int = 0
    space_type: str = "l2"
    ignore_above: int | None = None
    analyzer: str | None = None  # text fields: the mapping's `analyzer` (None: standard)
    search_analyzer: str | None = None  # the mapping's `search_analyzer` (None: `analyzer`)

    @property
    def query_analyzer(self) -> str | None:
        return self.search_analyzer or self.analyzer

    @property
    def kind(self) -> str:
        """Storage kind: str, int, float, bool, date, vector."""
        if self.type in _STRING_TYPES:
            return "str"
        if self.type in _INT_TYPES:
            return "int"
        if self.type in _FLOAT_TYPES:
            return "float"
        if self.type == "boolean":
            return "bool"
        if self.type == "date":
            return "date"
        return "vector"

    @property
    def analyzed(self) -> bool:
        return self.type in {"text", "match_only_text"}

    def arrow_type(self) -> pa.DataType:
        return {
            "str": pa.list_(pa.string()),
            "int": pa.list_(pa.int64()),
            "float": pa.list_(pa.float64()),
            "bool": pa.list_(pa.bool_()),
            "date": pa.list_(pa.int64()),
            "vector": pa.list_(pa.float32(), self.dimension),
        }[self.kind]


@dataclass(slots=True)
class NestedLayout:
    path: str
    table: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)

    def arrow_schema(self) -> pa.Schema:
        cols = [pa.field("_parent", pa.string()), pa.field("_ord", pa.int32()), pa.field("_source", pa.string())]
        cols += [pa.field(f.column, f.arrow_type()) for f in self.fields.values()]
        return pa.schema(cols)


@dataclass(slots=True)
class IndexLayout:
    """The parsed mapping of one embedded index."""

    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    nested: dict[str, NestedLayout] = field(default_factory=dict)
    copy_sources: dict[str, list[str]] = field(default_factory=dict)  # copy_to target -> source paths

    def values(self, source: Any, spec: FieldSpec) -> list[Any]:
        """A leaf's values in a document: its own, then those `copy_to` copies into it (in mapping order)."""
        own = extract(source, spec.source_path)
        for src in self.copy_sources.get(spec.source_path, ()):
            own = own + extract(source, src)
        return own

    @property
    def vector_paths(self) -> list[str]:
        return [p for p, f in self.fields.items() if f.kind == "vector"]

    def arrow_schema(self) -> pa.Schema:
        cols = [pa.field("_id", pa.string()), pa.field("_source", pa.string())]
        cols += [pa.field(f.column, f.arrow_type()) for f in self.fields.values()]
        return pa.schema(cols)

    def field(self, path: str, where: str = "query") -> FieldSpec:
        spec = self.fields.get(path)
        if spec is None:
            for nested in self.nested.values():
                if path in nested.fields:
                    raise BackendError(
                        f"field `{path}` lives in nested `{nested.path}`: wrap the clause in "
                        f'{{"nested": {{"path": "{nested.path}", "query": ...}}}}'
                    )
            known = ", ".join(sorted(self.fields)) or "(none)"
            raise BackendError(
                f"field `{path}` (in {where}) is not mapped in index `{self.name}`; the embedded backend "
                f"queries mapped fields only. Mapped fields: {known}"
            )
        return spec


#: Column-name encodings. 1 (indexes written before issue 14) maps `pub-date` and `pub_date` to one
#: column; 2 is injective and reversible, so no two field paths can share a column.
LEGACY_COLUMN_ENCODING = 1
COLUMN_ENCODING = 2


def column_name(path: str, encoding: int = COLUMN_ENCODING) -> str:
    """The column of a field path. Encoding 2: letters/digits kept, `.` -> `__`, `_` -> `_u`,
    any other character -> `_x<hex>_` (each escape starts `_` + a distinct letter: decodable)."""
    if encoding == LEGACY_COLUMN_ENCODING:
        return "f__" + re.sub(r"[^A-Za-z0-9_]", "_", path.replace(".", "__"))
    out = []
    for ch in path:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ch == ".":
            out.append("__")
        elif ch == "_":
            out.append("_u")
        else:
            out.append(f"_x{ord(ch):x}_")
    return "f__" + "".join(out)


def field_path(column: str) -> str:
    """The inverse of `column_name` (encoding 2)."""
    if not column.startswith("f__"):
        raise ValueError(f"not a field column: {column!r}")
    s, out, i = column[3:], [], 0
    while i < len(s):
        ch = s[i]
        if ch != "_":
            out.append(ch)
            i += 1
            continue
        tag = s[i + 1]
        if tag == "_":
            out.append(".")
            i += 2
        elif tag == "u":
            out.append("_")
            i += 2
        elif tag == "x":
            end = s.index("_", i + 2)
            out.append(chr(int(s[i + 2 : end], 16)))
            i = end + 1
        else:
            raise ValueError(f"not a field column: {column!r}")
    return "".join(out)


def _knn_params(prop: dict[str, Any], path: str) -> tuple[int, str]:
    try:
        dimension = int(prop["dimension"])
    except (KeyError, TypeError, ValueError):
        raise MapperParsingError(f"knn_vector field `{path}` needs an integer `dimension`") from None
    method = prop.get("method") or {}
    space = method.get("space_type") or prop.get("space_type") or "l2"
    if space not in SPACES:
        raise MapperParsingError(f"knn_vector `{path}`: space_type `{space}` is not supported ({sorted(SPACES)})")
    return dimension, space


def _analyzers(prop: dict[str, Any], path: str) -> dict[str, str | None]:
    """A text field's `analyzer` / `search_analyzer`, checked against the analyzers the engine has."""
    out: dict[str, str | None] = {}
    for key in ("analyzer", "search_analyzer"):
        name = prop.get(key)
        if name is not None and name not in ANALYZERS:
            raise MapperParsingError(
                f"field `{path}`: {key} `{name}` is not available in the embedded backend; "
                f"supported: {', '.join(ANALYZERS)}"
            )
        out[key] = name
    return out


def parse_mapping(index: str, mappings: dict[str, Any], encoding: int = COLUMN_ENCODING) -> IndexLayout:
    """Parse an OpenSearch `mappings` object; unsupported field types and two fields that would
    share one column fail loudly (before anything is persisted)."""
    layout = IndexLayout(name=index)

    def column_name(path: str) -> str:
        return _column_name(path, encoding)

    def walk(props: dict[str, Any], prefix: str, target: dict[str, FieldSpec], nested_ok: bool) -> None:
        for name, prop in props.items():
            path = f"{prefix}{name}"
            ftype = prop.get("type", "object" if "properties" in prop else None)
            if ftype == "nested":
                if not nested_ok:
                    raise MapperParsingError(f"nested inside nested (`{path}`) is not supported by the embedded backend")
                nested = NestedLayout(path=path, table=f"{index}__nested__{column_name(path)[3:]}")
                walk(prop.get("properties", {}), f"{path}.", nested.fields, nested_ok=False)
                layout.nested[path] = nested
                continue
            if ftype == "object" or ftype is None:
                walk(prop.get("properties", {}), f"{path}.", target, nested_ok)
                continue
            if ftype not in SUPPORTED_TYPES:
                raise MapperParsingError(
                    f"field `{path}` has type `{ftype}`, which the embedded backend does not support; "
                    f"supported: {', '.join(sorted(SUPPORTED_TYPES))}"
                )
            copy_to = prop.get("copy_to")
            if copy_to:
                if not nested_ok:
                    raise MapperParsingError(f"`copy_to` inside a nested field (`{path}`) is not supported by the "
                                             "embedded backend")
                for target_path in [copy_to] if isinstance(copy_to, str) else copy_to:
                    layout.copy_sources.setdefault(target_path, []).append(path)
            if ftype == "knn_vector":
                dim, space = _knn_params(prop, path)
                target[path] = FieldSpec(path, ftype, path, column_name(path), dimension=dim, space_type=space)
            else:
                target[path] = FieldSpec(path, ftype, path, column_name(path), ignore_above=prop.get("ignore_above"),
                                         **_analyzers(prop, path))
            for sub, subprop in (prop.get("fields") or {}).items():
                subtype = subprop.get("type")
                if subtype not in SUPPORTED_TYPES - {"knn_vector"}:
                    raise MapperParsingError(f"multi-field `{path}.{sub}` has unsupported type `{subtype}`")
                subpath = f"{path}.{sub}"
                target[subpath] = FieldSpec(
                    subpath, subtype, path, column_name(subpath), ignore_above=subprop.get("ignore_above"),
                    **_analyzers(subprop, subpath),
                )

    walk(mappings.get("properties", {}), "", layout.fields, nested_ok=True)
    for fields in [layout.fields, *(n.fields for n in layout.nested.values())]:
        seen: dict[str, str] = {}
        for path, spec in fields.items():
            other = seen.setdefault(spec.column, path)
            if other != path:
                raise MapperParsingError(
                    f"fields `{other}` and `{path}` would share the column `{spec.column}` in this index "
                    "(written by an older version); rename one of the fields, or re-create the index"
                )
    for target_path in layout.copy_sources:
        if target_path not in layout.fields:
            raise MapperParsingError(f"`copy_to` names `{target_path}`, which is not a mapped field of `{index}`")
    return layout


# ---------------------------------------------------------------- documents -> rows


def expand_dots(obj: Any) -> Any:
    """`{"a.b": 1}` -> `{"a": {"b": 1}}`, as OpenSearch reads dotted field names."""
    if isinstance(obj, list):
        return [expand_dots(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        value = expand_dots(value)
        parts = key.split(".") if "." in key and key.strip(".") == key else [key]
        cur = out
        for part in parts[:-1]:
            nxt = cur.get(part)
            if not isinstance(nxt, dict):
                nxt = cur[part] = {}
            cur = nxt
        last = parts[-1]
        if isinstance(cur.get(last), dict) and isinstance(value, dict):
            cur[last].update(value)
        else:
            cur[last] = value
    return out


def extract(source: Any, path: str) -> list[Any]:
    """All values at a dotted path, flattening arrays of objects the way OpenSearch does."""
    values = [source]
    for part in path.split("."):
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list):
                nxt.extend(x[part] for x in v if isinstance(x, dict) and part in x)
        values = nxt
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(v)
        else:
            out.append(v)
    return out


def extract_raw(source: dict[str, Any], path: str) -> Any:
    """The value at a dotted path without flattening (None when absent)."""
    cur: Any = source
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_date(value: Any, path: str = "date") -> int:
    """Dates as epoch milliseconds (accepts epoch millis and ISO 8601)."""
    if isinstance(value, bool):
        raise MapperParsingError(f"failed to parse date field `{path}` with value {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        if re.match(r"^\d{4}/\d{2}/\d{2}", text):  # OpenSearch's default also takes yyyy/MM/dd
            text = text.replace("/", "-", 2)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise MapperParsingError(
                f"failed to parse date field `{path}` with value {value!r}: use ISO 8601 or epoch millis"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp() * 1000)
    raise MapperParsingError(f"failed to parse date field `{path}` with value {value!r}")


def coerce(spec: FieldSpec, values: list[Any]) -> Any:
    """Column value for one document: a typed list (vector: a float32 array or None)."""
    values = [v for v in values if v is not None]
    kind = spec.kind
    if kind == "vector":
        if not values:
            return None
        vec = values[0] if len(values) == 1 and isinstance(values[0], (list, np.ndarray)) else values
        try:
            arr = np.asarray(vec, dtype=np.float32)
        except (TypeError, ValueError):
            raise MapperParsingError(f"knn_vector field `{spec.path}` must be an array of numbers") from None
        if arr.ndim != 1 or arr.shape[0] != spec.dimension:
            raise MapperParsingError(
                f"vector dimension mismatch for field `{spec.path}`: expected {spec.dimension}, got {arr.size}"
            )
        if not np.all(np.isfinite(arr)):
            raise MapperParsingError(f"knn_vector field `{spec.path}` holds NaN or infinite values")
        if spec.space_type == "cosinesimil" and not np.any(arr):
            raise MapperParsingError(f"knn_vector field `{spec.path}`: a zero vector is invalid for cosinesimil")
        return arr
    out: list[Any] = []
    for v in values:
        if isinstance(v, (dict, list)):
            raise MapperParsingError(f"field `{spec.path}` expects {spec.type} values, got an object/array: {v!r:.80}")
        try:
            if kind == "str":
                s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, bool) else str(v)
                if spec.ignore_above is not None and len(s) > spec.ignore_above:
                    continue
                out.append(s)
            elif kind == "int":
                if isinstance(v, bool):
                    raise ValueError
                f = float(v)
                if not math.isfinite(f) or abs(f) >= 2**63:
                    raise ValueError
                out.append(int(f))  # OpenSearch coerces 3.5 -> 3 on integer fields
            elif kind == "float":
                if isinstance(v, bool):
                    raise ValueError
                out.append(float(v))
            elif kind == "bool":
                if isinstance(v, bool):
                    out.append(v)
                elif v in ("true", "false"):
                    out.append(v == "true")
                else:
                    raise ValueError
            elif kind == "date":
                out.append(parse_date(v, spec.path))
        except (TypeError, ValueError, OverflowError):
            raise MapperParsingError(f"failed to parse field `{spec.path}` of type `{spec.type}` from {v!r:.80}") from None
    return out


def strip_vectors(source: dict[str, Any], layout: IndexLayout) -> dict[str, Any]:
    """A copy of the document without vector values (they are stored in their own columns)."""
    vector_paths = set(layout.vector_paths)
    for nested in layout.nested.values():
        vector_paths.update(p for p, f in nested.fields.items() if f.kind == "vector")

    def walk(obj: Any, prefix: str) -> Any:
        if isinstance(obj, dict):
            return {
                k: walk(v, f"{prefix}{k}.") for k, v in obj.items() if f"{prefix}{k}" not in vector_paths
            }
        if isinstance(obj, list):
            return [walk(x, prefix) for x in obj]
        return obj

    return walk(source, "")


# ---------------------------------------------------------------- dynamic mapping

_DATE_RE = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")


def _parses_as_date(value: str) -> bool:
    try:
        parse_date(value)
    except MapperParsingError:
        return False
    return True


def _dynamic_type(value: Any) -> dict[str, Any] | None:
    """OpenSearch's default dynamic mapping for a JSON value (None when it maps nothing)."""
    if isinstance(value, list):
        first = next((v for v in value if v is not None), None)
        return None if first is None else _dynamic_type(first)
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, str):
        if _DATE_RE.match(value) and _parses_as_date(value):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    if isinstance(value, dict):
        return {"properties": {}}
    return None


def _is_dynamic(setting: Any, inherited: bool) -> bool | str:
    if setting is None:
        return inherited
    if setting in (False, "false"):
        return False
    if setting == "strict":
        return "strict"
    return True


def dynamic_additions(mappings: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """Properties OpenSearch would add for unmapped fields of `source` (empty when none).

    Follows `dynamic` at every object level (default true): `false` keeps the field in `_source`
    only, `strict` rejects the document. Objects inside `nested` fields are not extended."""
    additions: dict[str, Any] = {}

    def walk(props: dict[str, Any], doc: dict[str, Any], dynamic: bool | str, out: dict[str, Any], prefix: str) -> None:
        for key, value in doc.items():
            if value is None or (isinstance(value, list) and not value):
                continue
            prop = props.get(key)
            if prop is None:
                if dynamic == "strict":
                    raise MapperParsingError(
                        f"mapping is strict: field `{prefix}{key}` is not mapped (add it to the mapping)"
                    )
                if not dynamic:
                    continue
                new = _dynamic_type(value)
                if new is None:
                    continue
                if "properties" in new:
                    objs = value if isinstance(value, list) else [value]
                    for obj in objs:
                        if isinstance(obj, dict):
                            walk({}, obj, dynamic, new["properties"], f"{prefix}{key}.")
                out[key] = new
                continue
            ptype = prop.get("type", "object" if "properties" in prop or "dynamic" in prop else None)
            if ptype == "object":
                inner_dynamic = _is_dynamic(prop.get("dynamic"), bool(dynamic) if dynamic != "strict" else True)
                if dynamic == "strict" and prop.get("dynamic") is None:
                    inner_dynamic = "strict"
                objs = value if isinstance(value, list) else [value]
                sub_out: dict[str, Any] = {}
                for obj in objs:
                    if isinstance(obj, dict):
                        walk(prop.get("properties", {}), obj, inner_dynamic, sub_out, f"{prefix}{key}.")
                if sub_out:
                    out[key] = {"properties": sub_out}

    walk(mappings.get("properties", {}), source, _is_dynamic(mappings.get("dynamic"), True), additions, "")
    return additions


def merge_properties(target: dict[str, Any], additions: dict[str, Any]) -> None:
    """Merge dynamic additions into a `properties` tree in place (existing fields win)."""
    for key, prop in additions.items():
        if key not in target:
            target[key] = prop
        elif "properties" in prop:
            merge_properties(target[key].setdefault("properties", {}), prop["properties"])


_column_name = column_name
