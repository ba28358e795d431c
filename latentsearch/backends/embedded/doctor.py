"""`latentsearch doctor`: integrity checks of an embedded index, and the repairs that are safe.

Finds what older versions or damage on disk can leave behind: duplicate `_id` rows (two concurrent
writers before the write lock), a lost meta file, vectors that are not finite (or zero under
cosine), a latest manifest that was deleted (Lance then silently serves the previous version), and
a row count below what the ingest checkpoints recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from latentsearch.backends.base import BackendError
from latentsearch.backends.embedded.backend import (
    _BODY_KEY,
    _ENCODING_KEY,
    _META_DIR,
    EmbeddedBackend,
    _sql_str,
    latest_committed_version,
)
from latentsearch.backends.embedded.layout import COLUMN_ENCODING, LEGACY_COLUMN_ENCODING, field_path, parse_mapping


class DoctorReport(BaseModel):
    """What `doctor` found (and, with `repair`, fixed) in one index."""

    index: str
    rows: int = 0
    unique_ids: int = 0
    duplicate_ids: int = Field(0, description="Ids with more than one row (before repair)")
    duplicate_rows_removed: int = 0
    nested_duplicate_rows_removed: int = 0
    bad_vectors: dict[str, int] = Field(default_factory=dict, description="Vector field -> rows non-finite or zero")
    version: int = 0
    latest_committed_version: int | None = Field(None, description="From the table's transaction log")
    rolled_back: bool = False
    meta: Literal["ok", "rebuilt", "missing"] = "ok"
    expected_rows: int | None = Field(None, description="Chunks the ingest checkpoints recorded as written")
    problems: list[str] = Field(default_factory=list)
    repaired: list[str] = Field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems or len(self.problems) == len(self.repaired)


def diagnose(backend: EmbeddedBackend, index: str, *, repair: bool = False,
             expected_rows: int | None = None) -> DoctorReport:
    """Check one index; with `repair`, remove duplicate rows (the last written wins) and rebuild a
    lost meta file. Runs under the index's write lock, so no writer changes it meanwhile."""
    backend._check_name(index)
    report = DoctorReport(index=index, expected_rows=expected_rows)
    with backend.write_lock(index):
        if index not in backend._table_names():
            raise BackendError(f"index `{index}` has no table in this database", status=404,
                               error_type="index_not_found_exception")
        _check_meta(backend, index, report, repair)
        if report.meta == "missing":
            return report
        idx = backend._index(index)
        table = idx.main.to_arrow()
        _check_duplicates(idx.main, table, "_id", report, repair)
        for path, ntable in idx.nested_tables.items():
            removed = _nested_duplicates(ntable, repair)
            if removed:
                report.problems.append(f"nested `{path}`: {removed} duplicate child row(s)")
                if repair:
                    report.nested_duplicate_rows_removed += removed
                    report.repaired.append(f"nested `{path}`: removed {removed} duplicate child row(s)")
        if report.duplicate_rows_removed:
            table = idx.main.to_arrow()
        report.rows = table.num_rows
        for path in idx.layout.vector_paths:
            spec = idx.layout.fields[path]
            bad = _bad_vectors(table.column(spec.column), spec.space_type)
            if bad:
                report.bad_vectors[path] = bad
                report.problems.append(f"vector field `{path}`: {bad} row(s) with non-finite or zero vectors")
        report.version = idx.main.version  # after any repair commits
        _check_versions(backend.path / f"{index}.lance", report)
        if expected_rows is not None and report.rows < expected_rows:
            report.problems.append(
                f"the ingest checkpoints recorded {expected_rows} chunks written, the index holds {report.rows} "
                "(re-run the ingest with --no-resume to restore what is missing)"
            )
    return report


def _check_meta(backend: EmbeddedBackend, index: str, report: DoctorReport, repair: bool) -> None:
    if backend._meta_path(index).is_file():
        return
    table = backend.db.open_table(index)
    if (table.schema.field("_source").metadata or {}).get(_BODY_KEY) is not None:
        backend._recover_meta(index)
        report.meta = "rebuilt"
        report.problems.append("meta file missing")
        report.repaired.append("meta file rebuilt from the copy in the table")
        return
    report.problems.append("meta file missing and the table holds no copy of it")
    if not repair:
        report.meta = "missing"
        return
    body = mapping_from_columns(table.schema)
    path = backend._meta_path(index)
    path.write_text(json.dumps(body, indent=1), encoding="utf-8")
    report.meta = "rebuilt"
    report.repaired.append("meta file rebuilt from the column names and types (text fields come back as "
                           "keyword; check `latentsearch mappings`)")


def mapping_from_columns(schema: pa.Schema) -> dict[str, Any]:
    """An index body recovered from a table's columns: paths from the column names, types from the
    Arrow types. Lossy (text reads as keyword, dates as long, the vector space as l2)."""
    columns = [f for f in schema if f.name.startswith("f__")]
    legacy = False
    paths: dict[str, pa.Field] = {}
    for f in columns:
        try:
            paths[field_path(f.name)] = f
        except (ValueError, IndexError):
            legacy = True
            break
    if legacy:  # an older version's names: `__` was a dot, the rest is as good as it gets
        paths = {f.name[3:].replace("__", "."): f for f in columns}
    props: dict[str, Any] = {}
    for path in sorted(paths, key=len):
        ftype = paths[path].type
        if pa.types.is_fixed_size_list(ftype):
            prop: dict[str, Any] = {"type": "knn_vector", "dimension": ftype.list_size}
        else:
            value = ftype.value_type if pa.types.is_list(ftype) else ftype
            prop = {"type": "keyword" if pa.types.is_string(value) else "long" if pa.types.is_integer(value)
                    else "double" if pa.types.is_floating(value) else "boolean" if pa.types.is_boolean(value)
                    else "keyword"}
        parent, _, leaf = path.rpartition(".")
        holder = _holder(props, parent)
        if holder is None:  # `title.keyword` under a `title` field: a multi-field
            field = _field(props, parent)
            if field is not None:
                field.setdefault("fields", {})[leaf] = prop
            continue
        holder[leaf] = prop
    body: dict[str, Any] = {"mappings": {"properties": props}}
    body[_ENCODING_KEY] = LEGACY_COLUMN_ENCODING if legacy else COLUMN_ENCODING
    if legacy:
        body.pop(_ENCODING_KEY)
    parse_mapping("recovered", body["mappings"], body.get(_ENCODING_KEY, LEGACY_COLUMN_ENCODING))
    return body


def _holder(props: dict[str, Any], parent: str) -> dict[str, Any] | None:
    cur = props
    for part in [p for p in parent.split(".") if p] if parent else []:
        node = cur.setdefault(part, {"properties": {}})
        if "type" in node:
            return None
        cur = node.setdefault("properties", {})
    return cur


def _field(props: dict[str, Any], path: str) -> dict[str, Any] | None:
    cur: Any = {"properties": props}
    for part in path.split("."):
        cur = (cur.get("properties") or {}).get(part)
        if cur is None:
            return None
    return cur if "type" in cur else None


def _check_duplicates(lance_table: Any, table: pa.Table, key: str, report: DoctorReport, repair: bool) -> None:
    ids = table.column(key).to_pylist()
    report.unique_ids = len(set(ids))
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    dupes = sorted(i for i, c in counts.items() if c > 1)
    report.duplicate_ids = len(dupes)
    if not dupes:
        return
    extra = sum(counts[d] - 1 for d in dupes)
    report.problems.append(f"{len(dupes)} id(s) have more than one row ({extra} extra row(s)), e.g. {dupes[:3]}")
    if not repair:
        return
    last: dict[str, int] = {}
    for row, i in enumerate(ids):
        if counts[i] > 1:
            last[i] = row
    kept = table.take(pa.array(sorted(last.values()), type=pa.int64()))
    for start in range(0, len(dupes), 500):
        chunk = dupes[start : start + 500]
        lance_table.delete(f"{key} IN ({', '.join(map(_sql_str, chunk))})")
    lance_table.add(kept)
    report.duplicate_rows_removed = extra
    report.repaired.append(f"removed {extra} duplicate row(s); the last written row of each id was kept")


def _nested_duplicates(lance_table: Any, repair: bool) -> int:
    table = lance_table.to_arrow()
    if not table.num_rows:
        return 0
    keys = list(zip(table.column("_parent").to_pylist(), table.column("_ord").to_pylist()))
    last: dict[tuple[str, int], int] = {}
    for row, k in enumerate(keys):
        last[k] = row
    extra = len(keys) - len(last)
    if extra and repair:
        parents = sorted({k[0] for k, n in _count(keys).items() if n > 1})
        rows = sorted(r for k, r in last.items() if k[0] in set(parents))
        kept = table.take(pa.array(rows, type=pa.int64()))
        for start in range(0, len(parents), 500):
            chunk = parents[start : start + 500]
            lance_table.delete(f"_parent IN ({', '.join(map(_sql_str, chunk))})")
        lance_table.add(kept)
    return extra


def _count(keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


def _bad_vectors(column: pa.ChunkedArray, space: str) -> int:
    present = pc.invert(pc.is_null(column)).to_numpy(zero_copy_only=False)
    if not present.any():
        return 0
    flat = column.combine_chunks()
    dim = flat.type.list_size
    values = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)[present]
    bad = ~np.all(np.isfinite(values), axis=1)
    if space == "cosinesimil":
        bad |= ~np.any(values, axis=1)
    return int(bad.sum())


def _check_versions(table_dir: Path, report: DoctorReport) -> None:
    """A newest committed transaction above the served version means the latest manifest is gone."""
    report.latest_committed_version = latest_committed_version(table_dir)
    if report.latest_committed_version is None:
        return
    if report.latest_committed_version > report.version:
        report.rolled_back = True
        report.problems.append(
            f"the table serves version {report.version} but version {report.latest_committed_version} was "
            "committed: the latest manifest file(s) under _versions/ are missing, so recent writes are not "
            "visible; restore them from a backup, or re-run the ingest"
        )


__all__ = ["DoctorReport", "diagnose", "mapping_from_columns", "_META_DIR"]
