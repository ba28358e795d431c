"""The one interface every engine implements. Requests and responses are OpenSearch-shaped dicts.

OpenSearch Query DSL is the canonical query language; the Elasticsearch backend translates it,
the embedded backend executes the subset latentsearch emits. Responses always look like an
OpenSearch `_search` response: `{"took", "timed_out", "hits": {"total", "max_score", "hits"}}`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class BackendError(RuntimeError):
    """A request the engine refused. `status` follows HTTP semantics (400 bad request, 404 ...)."""

    def __init__(self, message: str, *, status: int = 400, error_type: str = "bad_request"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class UnsupportedQueryError(BackendError):
    """The embedded engine met a DSL clause outside the subset it executes."""

    def __init__(self, clause: str, where: str = "query", hint: str = ""):
        msg = (
            f"the embedded backend does not support `{clause}` (in {where}); it runs the DSL subset "
            "latentsearch emits: bool, term, terms, match, multi_match, range, exists, ids, match_all, "
            "match_none, knn, nested, hybrid"
        )
        super().__init__(msg + (f". {hint}" if hint else ""), status=400, error_type="unsupported_query")
        self.clause = clause


class IndexNotFoundError(BackendError):
    def __init__(self, index: str):
        super().__init__(
            f"index `{index}` does not exist; create it with `latentsearch ingest PATH --index {index}`",
            status=404,
            error_type="index_not_found_exception",
        )
        self.index = index


class TransientBackendError(BackendError):
    """Worth retrying: 429 (too many requests), 5xx, or a connection problem."""

    def __init__(self, message: str, *, status: int = 503):
        super().__init__(message, status=status, error_type="transient")


RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class BulkAction:
    """One bulk operation. `index` upserts the whole document under `id` (idempotent); `create` writes
    it only if `id` is new (409 otherwise); `delete` removes it (404 when missing)."""

    id: str
    source: dict[str, Any] | None = None
    op: Literal["index", "create", "delete"] = "index"


@dataclass(slots=True)
class BulkItemResult:
    id: str
    status: int
    error: str | None = None
    error_type: str | None = None
    result: str | None = None  # OpenSearch's item `result`: created, updated, deleted, not_found

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 or (self.status == 404 and self.error is None)

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


@dataclass(slots=True)
class IndexInfo:
    name: str
    docs: int
    backend: str
    mapping: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class SearchBackend(ABC):
    """Create, fill, query and drop indices on one engine."""

    kind: str = "abstract"

    @abstractmethod
    def create_index(self, index: str, body: dict[str, Any], *, exist_ok: bool = False) -> bool:
        """Create `index` from an OpenSearch create-index body (settings + mappings).

        Returns True when created, False when it existed and `exist_ok` is set."""

    @abstractmethod
    def delete_index(self, index: str, *, missing_ok: bool = True) -> bool:
        """Drop the index. Returns whether it existed."""

    @abstractmethod
    def index_exists(self, index: str) -> bool: ...

    @abstractmethod
    def get_mapping(self, index: str) -> dict[str, Any]:
        """The index's `mappings` object (with `_meta`), OpenSearch-shaped."""

    @abstractmethod
    def list_indices(self) -> list[str]: ...

    @abstractmethod
    def bulk(self, index: str, actions: Sequence[BulkAction], *, refresh: bool = False) -> list[BulkItemResult]:
        """Apply the actions; one result per action in order. Raises TransientBackendError when the
        whole request failed in a retryable way (429/5xx/connection)."""

    @abstractmethod
    def search(self, index: str, body: dict[str, Any], *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run an OpenSearch `_search` body; returns an OpenSearch-shaped response."""

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several searches in one round trip. Engines override this with a real batched call."""
        return [self.search(index, body) for body in bodies]

    @abstractmethod
    def count(self, index: str, query: dict[str, Any] | None = None) -> int: ...

    @abstractmethod
    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The `_source` of one document, or None."""

    def refresh(self, index: str) -> None:
        """Make recent writes searchable (and compact storage on the embedded engine)."""

    def info(self, index: str) -> IndexInfo:
        return IndexInfo(name=index, docs=self.count(index), backend=self.kind, mapping=self.get_mapping(index))

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> SearchBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
