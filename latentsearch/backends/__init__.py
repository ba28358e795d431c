"""Engines behind one interface: `embedded` (LanceDB), `opensearch`, `elasticsearch`."""

from __future__ import annotations

from latentsearch.backends.base import (
    BackendError,
    BulkAction,
    BulkItemResult,
    IndexInfo,
    IndexNotFoundError,
    SearchBackend,
    TransientBackendError,
    UnsupportedQueryError,
)
from latentsearch.config import BackendConfig

__all__ = [
    "BackendError",
    "BulkAction",
    "BulkItemResult",
    "IndexInfo",
    "IndexNotFoundError",
    "SearchBackend",
    "TransientBackendError",
    "UnsupportedQueryError",
    "open_backend",
]


def open_backend(config: BackendConfig | None = None) -> SearchBackend:
    """The backend the config names (embedded when no URL is set)."""
    config = config or BackendConfig()
    kind = config.resolved_kind
    if kind == "embedded":
        from latentsearch.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(config.resolved_embedded_path, lock_timeout_s=config.lock_timeout_s,
                               max_depth=config.max_depth, max_fields=config.max_fields,
                               max_field_chars=config.max_field_chars)
    if not config.url:
        raise ValueError(f"backend `{kind}` needs a URL: set --url or LATENTSEARCH_BACKEND__URL")
    if kind == "opensearch":
        from latentsearch.backends.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_config(config)
    if kind == "elasticsearch":
        from latentsearch.backends.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend.from_config(config)
    raise ValueError(f"unknown backend kind {kind!r}; choose embedded, opensearch or elasticsearch")
