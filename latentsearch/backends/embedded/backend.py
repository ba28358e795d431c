"""The embedded engine: OpenSearch-shaped indices stored in LanceDB on local disk.

Storage is LanceDB (persistent, versioned, ANN indices); queries run over an in-memory snapshot
of the current table version (see `snapshot.py`), cached per process and rebuilt only when the
table version changes. The k-NN clause uses exact search, or the LanceDB vector index once one is
built (`create_vector_index`) and the filtered candidate set is large.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

# lance logs a WARN line for every new table ("No existing dataset ... it will be created"): expected here, so
# quiet by default; LANCEDB_LOG=warn (or `latentsearch -v`) shows them. Read once, when lancedb loads.
os.environ.setdefault("LANCEDB_LOG", "error")
import lancedb
import numpy as np
import pyarrow as pa
from filelock import FileLock, Timeout

from latentsearch.backends.base import (
    BackendError,
    BulkAction,
    BulkItemResult,
    IndexNotFoundError,
    SearchBackend,
    TransientBackendError,
    UnsupportedQueryError,
)
from latentsearch.backends.embedded import executor as ex
from latentsearch.backends.embedded.layout import (
    COLUMN_ENCODING,
    LEGACY_COLUMN_ENCODING,
    IndexLayout,
    MapperParsingError,
    coerce,
    dynamic_additions,
    expand_dots,
    extract,
    merge_properties,
    parse_mapping,
    strip_vectors,
)
from latentsearch.backends.embedded.snapshot import Snapshot, build_snapshot

log = logging.getLogger("latentsearch.embedded")

_META_DIR = "_latentsearch_indices"
_INDEX_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")
_INDEX_NAME_MAX = 255  # bytes, as in OpenSearch
#: Field metadata key on the `_source` column holding the index body: the table's own copy of its
#: meta file, from which a lost meta file is rebuilt.
_BODY_KEY = b"latentsearch.index_body"
#: Meta-file key (not part of the OpenSearch body): how field paths map to column names.
_ENCODING_KEY = "column_encoding"

#: Document limits (OpenSearch's index.mapping.* defaults where one exists); a document over a
#: limit is rejected on its own, the rest of its bulk request lands.
DEFAULT_MAX_DEPTH = 20
DEFAULT_MAX_FIELDS = 1000
DEFAULT_MAX_FIELD_CHARS = 100_000_000


_BLAS: Any = None  # threadpoolctl's controller of numpy's BLAS, made on first use


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run a query's numpy work on one BLAS thread. OpenBLAS's worker threads busy-wait ~100 ms after each
    call; on a 2-core box they starve whatever runs next in the process (a MiniLM question embedding right
    after a search: 10 ms -> 90 ms; see benchmarks/query.py). A query's matrix-vector products are small
    enough that one thread is as fast."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Index:
    """One open index: its layout, LanceDB tables and the cached snapshot."""

    def __init__(self, backend: EmbeddedBackend, name: str, body: dict[str, Any]):
        self.name = name
        self.body = body
        self.layout: IndexLayout = parse_mapping(name, body.get("mappings", {}), _encoding(body))
        self.main = backend.db.open_table(name)
        self.nested_tables = {p: backend.db.open_table(n.table) for p, n in self.layout.nested.items()}
        self._snapshot_key: tuple[int, ...] | None = None
        self._snapshot: tuple[Snapshot, dict[str, ex.NestedScope]] | None = None
        self._lock = threading.Lock()
        latest = latest_committed_version(backend.path / f"{name}.lance")
        if latest is not None and latest > self.main.version:  # never serve a rolled-back table silently
            log.warning("index `%s` serves table version %d but version %d was committed: the latest manifest "
                        "is missing (run `latentsearch doctor --index %s`)", name, self.main.version, latest, name)

    def versions(self) -> tuple[int, ...]:
        return (self.main.version, *(t.version for t in self.nested_tables.values()))

    def snapshot(self) -> tuple[Snapshot, dict[str, ex.NestedScope]]:
        with self._lock:
            key = self.versions()
            if self._snapshot is None or key != self._snapshot_key:
                main = build_snapshot(self.main.to_arrow(), self.layout.fields)
                scopes: dict[str, ex.NestedScope] = {}
                for path, nested in self.layout.nested.items():
                    snap = build_snapshot(self.nested_tables[path].to_arrow(), nested.fields, id_column="_parent")
                    row_of = main.row_of
                    snap.parent_rows = np.asarray([row_of.get(p, -1) for p in snap.ids.tolist()], dtype=np.int64)
                    scopes[path] = ex.NestedScope(path, nested.fields, snap)
                self._snapshot, self._snapshot_key = (main, scopes), key
            return self._snapshot

    def vector_indices(self) -> set[str]:
        return {c for idx in self.main.list_indices() for c in idx.columns}


#: Query-string parameters that change nothing on one local, single-shard index.
NEUTRAL_SEARCH_PARAMS = frozenset({"allow_no_indices", "expand_wildcards", "ignore_unavailable", "preference",
                                   "routing", "request_cache", "timeout"})


class EmbeddedBackend(SearchBackend):
    """LanceDB-backed engine that speaks the OpenSearch DSL subset latentsearch emits."""

    kind = "embedded"

    def __init__(
        self,
        path: str | Path,
        *,
        exact_search_max_candidates: int = ex.EXACT_SEARCH_MAX_CANDIDATES,
        lock_timeout_s: float = 120.0,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_fields: int = DEFAULT_MAX_FIELDS,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ):
        """`exact_search_max_candidates`: k-NN over at most this many (filtered) rows is exact;
        above it the LanceDB vector index is used when one exists (see `create_vector_index`).
        `lock_timeout_s`: how long a write waits for another writer (any process) of the same index.
        `max_depth` / `max_fields` / `max_field_chars`: per-document limits (nesting depth of objects
        and arrays, leaf values, characters of one string or key); a document over one is rejected alone."""
        self.path = Path(path).expanduser()
        self.exact_search_max_candidates = exact_search_max_candidates
        self.lock_timeout_s = lock_timeout_s
        self.max_depth = max_depth
        self.max_fields = max_fields
        self.max_field_chars = max_field_chars
        self._thread_locks: dict[str, threading.RLock] = {}
        self._thread_locks_guard = threading.Lock()
        self._held: dict[str, int] = {}  # index -> 1 while this process holds its file lock
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / _META_DIR).mkdir(exist_ok=True)
        # strong read consistency: every read sees writes made by other handles and processes
        self.db = lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
        self._open: dict[str, _Index] = {}

    # ------------------------------------------------------------ index admin

    def _meta_path(self, index: str) -> Path:
        return self.path / _META_DIR / f"{index}.json"

    @staticmethod
    def _check_name(index: str) -> None:
        """Every method that takes an index name checks it: a name is also a file name here."""
        if (not isinstance(index, str) or not index or not set(index) <= _INDEX_NAME_CHARS or index[0] in "-_."
                or "__" in index or len(index.encode()) > _INDEX_NAME_MAX):
            shown = repr(index) if isinstance(index, str) and len(index) <= 80 else f"{str(index)[:80]!r}..."
            raise BackendError(
                f"invalid index name {shown}: use lowercase letters, digits, '-', '_' or '.', "
                f"not starting with '-', '_' or '.', without '__', at most {_INDEX_NAME_MAX} characters",
                error_type="invalid_index_name_exception",
            )

    @contextlib.contextmanager
    def write_lock(self, index: str) -> Iterator[None]:
        """Serialise writers of one index across threads and processes (a file lock under the
        database folder): Lance's optimistic commits would otherwise let two concurrent upserts of
        the same `_id` both append."""
        self._check_name(index)
        with self._thread_locks_guard:
            tlock = self._thread_locks.setdefault(index, threading.RLock())
        if not tlock.acquire(timeout=self.lock_timeout_s):
            raise self._lock_timeout(index)
        try:
            if self._held.get(index):  # re-entered by the thread that holds it (bulk -> refresh)
                yield
                return
            flock = FileLock(str(self.path / _META_DIR / f"{index}.lock"), thread_local=False)
            try:
                flock.acquire(timeout=self.lock_timeout_s)
            except Timeout:
                raise self._lock_timeout(index) from None
            self._held[index] = 1
            try:
                yield
            finally:
                self._held[index] = 0
                flock.release()
        finally:
            tlock.release()

    def _lock_timeout(self, index: str) -> TransientBackendError:
        return TransientBackendError(
            f"index `{index}` is being written by another process or thread and stayed locked for "
            f"{self.lock_timeout_s:g} s; retry later, or remove `{_META_DIR}/{index}.lock` in the database "
            "folder if no writer is running"
        )

    def index_exists(self, index: str) -> bool:
        self._check_name(index)
        if self._meta_path(index).is_file():
            return True
        return self._recover_meta(index) is not None

    def _write_meta(self, index: str, body: dict[str, Any]) -> None:
        """Atomic (temp file + rename), and mirrored into the table's own field metadata."""
        path = self._meta_path(index)
        tmp = path.with_name(f".{index}.json.tmp")
        tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        if index in self._table_names():
            table = self.db.open_table(index)
            try:
                with warnings.catch_warnings():  # deprecated for update_field_metadata, which is not usable yet
                    warnings.simplefilter("ignore")
                    table.replace_field_metadata("_source", {_BODY_KEY.decode(): json.dumps(body)})
            except Exception:  # the meta file stays authoritative; the mirror is best effort
                pass

    def _recover_meta(self, index: str) -> dict[str, Any] | None:
        """A table whose meta file is gone: rebuild the meta file from the body mirrored in the
        table's schema. Tables from older versions (no mirror) refuse with a repair hint."""
        if index not in self._table_names():
            return None
        table = self.db.open_table(index)
        meta = table.schema.field("_source").metadata or {}
        raw = meta.get(_BODY_KEY)
        if raw is None:
            raise BackendError(
                f"index `{index}` has a table but its meta file `{_META_DIR}/{index}.json` is missing, and the "
                "table (written by an older version) holds no copy of it: restore the file from a backup, or "
                "run `latentsearch doctor --index <name> --repair`, which rebuilds it from the columns",
                status=500, error_type="index_meta_missing_exception",
            )
        body = json.loads(raw)
        path = self._meta_path(index)
        tmp = path.with_name(f".{index}.json.tmp")
        tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return body

    def create_index(self, index: str, body: dict[str, Any], *, exist_ok: bool = False) -> bool:
        self._check_name(index)
        with self.write_lock(index):
            if self.index_exists(index):
                if exist_ok:
                    return False
                raise BackendError(f"index `{index}` already exists", error_type="resource_already_exists_exception")
            body = dict(body or {})
            unknown = set(body) - {"settings", "mappings", "aliases"}
            if unknown:
                raise BackendError(f"unknown create-index keys {sorted(unknown)}; expected settings, mappings")
            layout = parse_mapping(index, body.get("mappings", {}))
            body[_ENCODING_KEY] = COLUMN_ENCODING
            schema = layout.arrow_schema()
            i = schema.get_field_index("_source")
            schema = schema.set(i, schema.field(i).with_metadata({_BODY_KEY: json.dumps(body).encode()}))
            # never "overwrite": a table that exists here belongs to an index whose meta is damaged
            self.db.create_table(index, schema=schema, mode="create")
            for nested in layout.nested.values():
                self.db.create_table(nested.table, schema=nested.arrow_schema(), mode="overwrite")
            self._write_meta(index, body)
            self._open.pop(index, None)
            return True

    def _index(self, index: str) -> _Index:
        idx = self._open.get(index)
        if idx is None:
            self._check_name(index)
            path = self._meta_path(index)
            if not path.is_file():
                body = self._recover_meta(index)
                if body is None:
                    raise IndexNotFoundError(index)
            idx = _Index(self, index, json.loads(path.read_text(encoding="utf-8")))
            self._open[index] = idx
        return idx

    def delete_index(self, index: str, *, missing_ok: bool = True) -> bool:
        self._check_name(index)
        with self.write_lock(index):
            if not self._meta_path(index).is_file():
                if index in self._table_names():  # a table whose meta file is lost: drop what is known
                    self.db.drop_table(index)
                    self._open.pop(index, None)
                    return True
                if missing_ok:
                    return False
                raise IndexNotFoundError(index)
            body = json.loads(self._meta_path(index).read_text(encoding="utf-8"))
            layout = parse_mapping(index, body.get("mappings", {}), _encoding(body))
            existing = set(self._table_names())
            for name in [index, *(n.table for n in layout.nested.values())]:
                if name in existing:
                    self.db.drop_table(name)
            self._meta_path(index).unlink()
            self._open.pop(index, None)
            return True

    def _table_names(self) -> list[str]:
        result = self.db.list_tables()
        names = getattr(result, "tables", result)
        return list(names)

    def list_indices(self) -> list[str]:
        return sorted(p.stem for p in (self.path / _META_DIR).glob("*.json"))

    def get_mapping(self, index: str) -> dict[str, Any]:
        return self._index(index).body.get("mappings", {})

    def get_settings(self, index: str) -> dict[str, Any]:
        return self._index(index).body.get("settings", {})

    # ------------------------------------------------------------ writes

    def bulk(self, index: str, actions: Sequence[BulkAction], *, refresh: bool = False) -> list[BulkItemResult]:
        """Upsert/delete by id under the index's write lock, with per-item statuses as OpenSearch gives them,
        in order: index 201 created / 200 updated, create 201 / 409 when the id exists, delete 200 deleted /
        404 not_found. A document that fails (mapping, encoding, limits) gets its own error item, the rest of
        the request lands."""
        with self.write_lock(index):
            return self._bulk(index, actions, refresh)

    def _bulk(self, index: str, actions: Sequence[BulkAction], refresh: bool) -> list[BulkItemResult]:
        idx, refused = self._apply_dynamic_mapping(self._index(index), actions)
        results: list[BulkItemResult | None] = [None] * len(actions)
        rows: dict[str, dict[str, Any]] = {}  # last write per id wins, like sequential bulk
        nested_rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        deletes: set[str] = set()
        # ids that cannot be encoded are refused per item below; they cannot exist in the table
        exists = self._existing_ids(idx, {str(a.id) for a in actions if _encodable(str(a.id))})  # updated as it runs
        for i, action in enumerate(actions):
            doc_id = str(action.id)
            if action.op == "delete":
                if doc_id in exists:
                    deletes.add(doc_id)
                    rows.pop(doc_id, None)
                    nested_rows.pop(doc_id, None)
                    exists.discard(doc_id)
                    results[i] = BulkItemResult(doc_id, 200, result="deleted")
                else:
                    results[i] = BulkItemResult(doc_id, 404, result="not_found")
                continue
            if action.op not in ("index", "create"):
                results[i] = BulkItemResult(doc_id, 400, f"unsupported bulk op {action.op!r}; supported: index, "
                                            "create, delete", "illegal_argument_exception")
                continue
            if action.op == "create" and doc_id in exists:
                results[i] = BulkItemResult(doc_id, 409, f"[{doc_id}]: version conflict, document already exists",
                                            "version_conflict_engine_exception")
                continue
            if i in refused:
                err = refused[i]
                results[i] = BulkItemResult(doc_id, err.status, str(err), err.error_type)
                continue
            try:
                row, nested = self._row(idx, doc_id, action.source)
            except MapperParsingError as err:
                results[i] = BulkItemResult(doc_id, err.status, str(err), err.error_type)
                continue
            rows[doc_id] = row
            nested_rows[doc_id] = nested
            deletes.discard(doc_id)
            results[i] = BulkItemResult(doc_id, 200, result="updated") if doc_id in exists else \
                BulkItemResult(doc_id, 201, result="created")
            exists.add(doc_id)
        self._write(idx, rows, nested_rows, deletes)
        if refresh:
            self._refresh(index)  # already under the write lock
        return [r for r in results if r is not None]

    @staticmethod
    def _existing_ids(idx: _Index, ids: set[str]) -> set[str]:
        """Which of `ids` the index holds now (one filtered scan of the id column per 500 ids)."""
        found: set[str] = set()
        for chunk in _chunks(sorted(ids), 500):
            table = idx.main.search().where(f"_id IN ({', '.join(map(_sql_str, chunk))})").select(["_id"])
            found.update(table.limit(None).to_arrow().column("_id").to_pylist())
        return found

    def _apply_dynamic_mapping(
        self, idx: _Index, actions: Sequence[BulkAction]
    ) -> tuple[_Index, dict[int, MapperParsingError]]:
        """Map unmapped fields the way OpenSearch's dynamic mapping does, adding columns as needed.
        Each document's additions are validated (limits, encoding, column collisions) before anything
        is persisted; a document whose additions fail is refused alone (returned by action number).
        Documents a strict mapping rejects are left for `_row` to report per item."""
        # another handle or process may have added fields since we opened the index: reopen from disk
        if json.loads(self._meta_path(idx.name).read_text(encoding="utf-8")) != idx.body:
            self._open.pop(idx.name, None)
            idx = self._index(idx.name)
        body = json.loads(json.dumps(idx.body))  # a copy: idx.body changes only once the update is valid
        mappings = body.setdefault("mappings", {})
        refused: dict[int, MapperParsingError] = {}
        changed = False
        for i, action in enumerate(actions):
            if action.op not in ("index", "create") or not isinstance(action.source, dict):
                continue
            try:
                self._check_document(action.source)
                doc_additions = dynamic_additions(mappings, expand_dots(action.source))
                if not doc_additions:
                    continue
                trial = json.loads(json.dumps(mappings))
                # later documents do not override a type an earlier one set (as in OpenSearch)
                merge_properties(trial.setdefault("properties", {}), doc_additions)
                parse_mapping(idx.name, trial, _encoding(body))  # collisions, unsupported types
            except MapperParsingError as err:
                refused[i] = err
                continue
            except (RecursionError, ValueError) as err:
                refused[i] = MapperParsingError(f"document cannot be mapped: {err}")
                continue
            body["mappings"] = mappings = trial
            changed = True
        if not changed:
            return idx, refused
        new_layout = parse_mapping(idx.name, mappings, _encoding(body))
        existing = set(idx.main.schema.names)
        new_fields = [pa.field(f.column, f.arrow_type()) for f in new_layout.fields.values() if f.column not in existing]
        if new_fields:
            idx.main.add_columns(new_fields)
        self._write_meta(idx.name, body)
        self._open.pop(idx.name, None)
        return self._index(idx.name), refused

    def _check_document(self, source: Any) -> None:
        """Limits and encoding, checked without recursion (a 900-deep document must not blow the
        stack): every string and key must be valid Unicode (no lone surrogates)."""
        stack: list[tuple[Any, int]] = [(source, 0)]
        leaves = 0
        while stack:
            value, depth = stack.pop()
            if isinstance(value, dict):
                if depth >= self.max_depth:
                    raise MapperParsingError(f"document nests deeper than the limit of {self.max_depth} levels")
                for k, v in value.items():
                    _check_string(k, "a field name", self.max_field_chars)
                    stack.append((v, depth + 1))
            elif isinstance(value, list):
                if depth >= self.max_depth:
                    raise MapperParsingError(f"document nests deeper than the limit of {self.max_depth} levels")
                if value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                    leaves += 1  # a vector (or a numeric array) is one value, not one per dimension
                    if leaves > self.max_fields:
                        raise MapperParsingError(f"document has more than the limit of {self.max_fields} values")
                    continue
                stack.extend((v, depth + 1) for v in value)
            else:
                leaves += 1
                if leaves > self.max_fields:
                    raise MapperParsingError(f"document has more than the limit of {self.max_fields} values")
                if isinstance(value, str):
                    _check_string(value, "a value", self.max_field_chars)

    def _row(self, idx: _Index, doc_id: str, source: Any) -> tuple[dict[str, Any], dict[str, list]]:
        layout = idx.layout
        if not isinstance(source, dict):
            raise MapperParsingError(f"document `{doc_id}` must be a JSON object, got {type(source).__name__}")
        _check_string(doc_id, "the document id", 512)  # the source passed _check_document in _apply_dynamic_mapping
        source = expand_dots(source)
        dynamic_additions(idx.body.get("mappings", {}), source)  # raises for fields a strict mapping refuses
        row: dict[str, Any] = {"_id": doc_id, "_source": json.dumps(strip_vectors(source, layout), ensure_ascii=False)}
        for spec in layout.fields.values():
            row[spec.column] = coerce(spec, layout.values(source, spec))
        nested_out: dict[str, list[dict[str, Any]]] = {}
        for path, nested in layout.nested.items():
            objs = extract(source, path)
            out = []
            for ord_, obj in enumerate(objs):
                if not isinstance(obj, dict):
                    raise MapperParsingError(f"nested field `{path}` of `{doc_id}` must hold objects, got {obj!r:.80}")
                kept = {k: v for k, v in obj.items() if nested.fields.get(f"{path}.{k}", None) is None
                        or nested.fields[f"{path}.{k}"].kind != "vector"}
                nrow: dict[str, Any] = {"_parent": doc_id, "_ord": ord_, "_source": json.dumps(kept, ensure_ascii=False)}
                for spec in nested.fields.values():
                    nrow[spec.column] = coerce(spec, extract(obj, spec.source_path[len(path) + 1 :]))
                out.append(nrow)
            nested_out[path] = out
        return row, nested_out

    def _write(
        self,
        idx: _Index,
        rows: dict[str, dict[str, Any]],
        nested_rows: dict[str, dict[str, list[dict[str, Any]]]],
        deletes: set[str],
    ) -> None:
        layout = idx.layout
        touched = list(rows) + sorted(deletes)
        if deletes:
            for chunk in _chunks(sorted(deletes), 500):
                idx.main.delete(f"_id IN ({', '.join(map(_sql_str, chunk))})")
        if rows:
            table = _to_arrow(list(rows.values()), layout.arrow_schema())
            (
                idx.main.merge_insert("_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table, on_bad_vectors="null")  # vectors were validated; null = no vector
            )
        for path, nested in layout.nested.items():
            ntable = idx.nested_tables[path]
            if touched:
                for chunk in _chunks(touched, 500):
                    ntable.delete(f"_parent IN ({', '.join(map(_sql_str, chunk))})")
            new_rows = [r for doc in nested_rows.values() for r in doc.get(path, [])]
            if new_rows:
                ntable.add(_to_arrow(new_rows, nested.arrow_schema()), on_bad_vectors="null")

    def refresh(self, index: str) -> None:
        """Writes are visible at once; this compacts small fragments (cheap when few)."""
        with self.write_lock(index):
            self._refresh(index)

    def _refresh(self, index: str) -> None:
        idx = self._index(index)
        for table in [idx.main, *idx.nested_tables.values()]:
            try:
                fragments = table.stats().fragment_stats.num_fragments
            except Exception:
                fragments = 0
            if fragments > 16:
                table.optimize()

    def create_vector_index(self, index: str, field: str = "vector", *, min_rows: int = 256) -> bool:
        """Build a LanceDB IVF-HNSW index on a top-level knn_vector field (ANN for large indices)."""
        from lancedb.index import IvfHnswSq

        idx = self._index(index)
        spec = idx.layout.fields.get(field)
        if spec is None or spec.kind != "vector":
            raise BackendError(f"`{field}` is not a knn_vector field of `{index}`")
        rows = idx.main.count_rows()
        if rows < min_rows:
            return False
        metric = {"cosinesimil": "cosine", "l2": "l2", "innerproduct": "dot"}.get(spec.space_type)
        if metric is None:
            raise BackendError(f"no ANN index for space `{spec.space_type}`; exact search is used")
        with self.write_lock(index):
            idx.main.create_index(spec.column, config=IvfHnswSq(distance_type=metric), replace=True)
        return True

    # ------------------------------------------------------------ reads

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        idx = self._index(index)
        snap, scopes = idx.snapshot()
        row = snap.row_of.get(str(doc_id))
        if row is None:
            return None
        return self._source(idx, snap, scopes, row, None)

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        with _one_blas_thread():
            return self._count(index, query)

    def _count(self, index: str, query: dict[str, Any] | None) -> int:
        idx = self._index(index)
        if query is None:
            return idx.main.count_rows()
        ctx = self._context(idx, scoring=False)
        return int(ex.evaluate(query, ctx).mask.sum())

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        idx = self._index(index)
        idx.snapshot()  # one snapshot load serves the whole batch
        return [self.search(index, body) for body in bodies]

    def _context(self, idx: _Index, scoring: bool = True) -> ex.Context:
        snap, scopes = idx.snapshot()
        vector_columns = idx.vector_indices() if snap.n_rows > self.exact_search_max_candidates else set()

        def ann(field: str, q: np.ndarray, limit: int, ef: int | None) -> np.ndarray | None:
            spec = idx.layout.fields[field]
            if spec.column not in vector_columns:
                return None
            metric = {"cosinesimil": "cosine", "l2": "l2", "innerproduct": "dot"}[spec.space_type]
            query = idx.main.search(q, vector_column_name=spec.column).distance_type(metric).limit(limit)
            if ef:
                query = query.ef(max(int(ef), limit))
            else:
                query = query.ef(max(limit * 2, 100))
            found = query.select(["_id"]).to_arrow().column("_id").to_pylist()
            row_of = snap.row_of
            return np.asarray([row_of[i] for i in found if i in row_of], dtype=np.int64)

        return ex.Context(idx.layout.fields, snap, idx.name, scopes, scoring, ann=ann,
                          exact_max_candidates=self.exact_search_max_candidates)

    def search(self, index: str, body: dict[str, Any] | None = None, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        with _one_blas_thread():
            return self._search(index, body, params)

    def _search(self, index: str, body: dict[str, Any] | None, params: dict[str, Any] | None) -> dict[str, Any]:
        started = time.perf_counter()
        body = dict(body or {})
        unknown = set(body) - ex.SUPPORTED_BODY_KEYS
        if unknown:
            raise UnsupportedQueryError(sorted(unknown)[0], where="the search body")
        if params and params.get("search_pipeline"):
            raise UnsupportedQueryError(
                "named search_pipeline", where="search params", hint="pass the pipeline inline as body.search_pipeline"
            )
        ignored = sorted(set(params or {}) - NEUTRAL_SEARCH_PARAMS)
        if ignored:  # never answer as if a parameter that would change the result had been applied
            raise UnsupportedQueryError(
                ignored[0], where="search params",
                hint=f"the embedded engine accepts only {', '.join(sorted(NEUTRAL_SEARCH_PARAMS))}",
            )
        idx = self._index(index)
        size = int(body.get("size", 10))
        from_ = int(body.get("from", 0))
        if size < 0 or from_ < 0:
            raise BackendError("size and from must be non-negative")
        ctx = self._context(idx)
        query = body.get("query") or {"match_all": {}}
        name, qbody = ex._one_clause(query, "query")
        if name == "hybrid":
            result = ex.eval_hybrid(qbody, ctx, body.get("search_pipeline"), max(size + from_, 1))
        else:
            if body.get("search_pipeline"):
                raise UnsupportedQueryError("search_pipeline without a hybrid query", where="the search body")
            result = ex.evaluate(query, ctx)
        mask = result.mask
        if body.get("min_score") is not None:
            mask = mask & (result.score >= float(body["min_score"]))
        rows = np.flatnonzero(mask)
        order = rows[np.lexsort((rows, -result.score[rows]))]
        total = int(order.size) if result.total is None or body.get("min_score") is not None else result.total
        collapse = body.get("collapse")
        collapse_values: dict[int, Any] = {}
        if collapse:
            order, collapse_values = self._collapse(ctx, order, collapse)
        page = order[from_ : from_ + size]
        snap, scopes = ctx.snapshot, ctx.nested
        source_spec = body.get("_source")
        hits = []
        for row in page.tolist():
            hit: dict[str, Any] = {"_index": index, "_id": str(snap.ids[row]), "_score": float(result.score[row])}
            src = self._source(idx, snap, scopes, row, source_spec)
            if src is not None:
                hit["_source"] = src
            if collapse:
                hit["fields"] = {collapse["field"]: [collapse_values[row]]}
            if ctx.inner_hits:
                hit["inner_hits"] = self._inner_hits(idx, ctx, row, index)
            hits.append(hit)
        response = {
            "took": int((time.perf_counter() - started) * 1000),
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": total, "relation": "eq"},
                "max_score": float(result.score[order[0]]) if order.size else None,
                "hits": hits,
            },
        }
        aggs = body.get("aggs", body.get("aggregations"))
        if aggs:
            response["aggregations"] = ex.eval_aggs(aggs, ctx, mask)
        return response

    def _collapse(self, ctx: ex.Context, order: np.ndarray, collapse: dict[str, Any]) -> tuple[np.ndarray, dict]:
        field = collapse.get("field") if isinstance(collapse, dict) else None
        if not field or set(collapse) - {"field"}:
            raise UnsupportedQueryError("collapse options other than `field`")
        spec = ctx.field(field, "collapse")
        if spec.kind in {"vector"} or spec.analyzed:
            raise BackendError(f"collapse needs a keyword or numeric field, `{field}` is {spec.type}")
        col = ctx.snapshot.columns[field]
        first_value: dict[int, Any] = {}
        for v, p in zip(col.values.tolist(), col.parents.tolist()):
            first_value.setdefault(p, col.vocab[v] if col.vocab is not None else v)
        seen: set[Any] = set()
        kept = []
        values: dict[int, Any] = {}
        for row in order.tolist():
            value = first_value.get(row)
            if value in seen:
                continue
            seen.add(value)
            kept.append(row)
            values[row] = value
        return np.asarray(kept, dtype=np.int64), values

    def _source(
        self, idx: _Index, snap: Snapshot, scopes: dict[str, ex.NestedScope], row: int, spec: Any
    ) -> dict[str, Any] | None:
        if spec is False:
            return None
        source = json.loads(snap.sources[row])
        for path in idx.layout.vector_paths:
            col = snap.vectors[path]
            if col.present[row] and ex.wants_path(spec, path):
                _set_path(source, path, _vector_json(col.matrix[row]))
        for path, scope in scopes.items():
            vec_paths = [p for p, f in scope.fields.items() if f.kind == "vector" and ex.wants_path(spec, p)]
            if not vec_paths:
                continue
            children = np.flatnonzero(scope.snapshot.parent_rows == row)
            objs = _get_path(source, path)
            if not isinstance(objs, list):
                objs = [objs] if isinstance(objs, dict) else []
            for child in children.tolist():
                ord_ = int(scope.snapshot.ords[child])
                if ord_ < len(objs):
                    for vp in vec_paths:
                        vcol = scope.snapshot.vectors[vp]
                        if vcol.present[child]:
                            _set_path(objs[ord_], vp[len(path) + 1 :], _vector_json(vcol.matrix[child]))
        return ex.filter_source(source, spec)

    def _inner_hits(self, idx: _Index, ctx: ex.Context, row: int, index: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for req in ctx.inner_hits:
            scope = ctx.nested[req.path]
            snap = scope.snapshot
            children = np.flatnonzero((snap.parent_rows == row) & req.child_mask)
            children = children[np.lexsort((snap.ords[children], -req.child_score[children]))]
            size = int(req.options.get("size", 3))
            from_ = int(req.options.get("from", 0))
            hits = []
            for child in children[from_ : from_ + size].tolist():
                src = json.loads(snap.sources[child])
                for vp, vcol in snap.vectors.items():
                    if vcol.present[child] and ex.wants_path(req.options.get("_source"), vp):
                        _set_path(src, vp[len(req.path) + 1 :], _vector_json(vcol.matrix[child]))
                hit: dict[str, Any] = {
                    "_index": index,
                    "_id": str(ctx.snapshot.ids[row]),
                    "_nested": {"field": req.path, "offset": int(snap.ords[child])},
                    "_score": float(req.child_score[child]),
                }
                inner_spec = req.options.get("_source")
                filtered = ex.filter_source({req.path: src}, inner_spec) if inner_spec not in (None, True) else None
                hit["_source"] = (filtered or {}).get(req.path, {}) if inner_spec not in (None, True) else src
                hits.append(hit)
            out[req.name] = {
                "hits": {
                    "total": {"value": int(children.size), "relation": "eq"},
                    "max_score": float(req.child_score[children[0]]) if children.size else None,
                    "hits": hits,
                }
            }
        return out


_TXN = re.compile(r"^(\d+)-[0-9a-f-]+\.txn$")


def latest_committed_version(table_dir: Path) -> int | None:
    """The newest version the table's transaction log says was committed: each commit leaves
    `_transactions/<read version>-<uuid>.txn`, and a commit read at version v made v+1."""
    txn_dir = table_dir / "_transactions"
    if not txn_dir.is_dir():
        return None
    reads = [int(m.group(1)) for p in txn_dir.iterdir() if (m := _TXN.match(p.name))]
    return max(reads) + 1 if reads else None


def _encoding(body: dict[str, Any]) -> int:
    """Indexes created before issue 14 have no encoding key: their columns use the legacy names."""
    return int(body.get(_ENCODING_KEY, LEGACY_COLUMN_ENCODING))


def _check_string(value: str, what: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise MapperParsingError(f"{what} is longer than the limit of {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MapperParsingError(
            f"{what} `{value[:40].encode('utf-8', 'backslashreplace').decode()}` is not valid Unicode "
            f"(lone surrogate {value[err.start].encode('utf-8', 'surrogatepass').hex()} at character {err.start})"
        ) from None


def _vector_json(vec: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that round-trip (1.4, not 1.399999976)."""
    return [float(str(v)) for v in vec]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {}
    for fld in schema:
        values = [r.get(fld.name) for r in rows]
        if pa.types.is_fixed_size_list(fld.type):
            dim = fld.type.list_size
            present = np.asarray([v is not None for v in values])
            flat = np.zeros((len(values), dim), dtype=np.float32)
            if present.any():
                flat[present] = np.stack([v for v in values if v is not None])
            arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=pa.array(~present))
            columns[fld.name] = arr
        else:
            columns[fld.name] = pa.array(values, type=fld.type)
    return pa.table(columns, schema=schema)


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = obj.get(p)
        if not isinstance(nxt, dict):
            nxt = obj[p] = {}
        obj = nxt
    obj[parts[-1]] = value


def _get_path(obj: dict[str, Any], path: str) -> Any:
    for p in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj
