"""What the OpenSearch and Elasticsearch backends share: the same REST resources (indices, mappings,
documents) behind two clients. Subclasses supply the client call for each step and `_errors`, the
translator of their client's exceptions; the rules (exist_ok, missing_ok, 404 on a missing document,
hidden indices) live once, here.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from latentsearch.backends.base import BackendError, IndexNotFoundError, SearchBackend
from latentsearch.config import BackendConfig


def tls_kwargs(config: BackendConfig) -> dict[str, Any]:
    """The client keywords for an https URL (both clients name them alike); none for http."""
    tls = config.tls
    if not (config.url or "").lower().startswith("https://"):
        return {}
    # Whoever turned verification off did it on purpose: don't warn on every request.
    kwargs: dict[str, Any] = {"verify_certs": tls.verify, "ssl_show_warn": tls.verify}
    for key, value in (("ca_certs", tls.ca_certs), ("client_cert", tls.client_cert), ("client_key", tls.client_key)):
        if value:
            kwargs[key] = str(value)
    return kwargs


def response_body(response: Any) -> Any:
    """elasticsearch-py wraps responses (`.body`); opensearch-py returns the dict itself."""
    return getattr(response, "body", response)


class ClusterBackend(SearchBackend):
    client: Any
    url: str

    @abstractmethod
    def _errors(self, action: str, index: str | None = None) -> AbstractContextManager[None]:
        """A context that turns the client's exceptions into latentsearch's BackendError classes."""

    @abstractmethod
    def _create(self, index: str, body: dict[str, Any]) -> None:
        """Send the create-index request (`body` is OpenSearch-shaped)."""

    def _forget(self, index: str) -> None:
        """Drop anything cached about `index` (called when it is created or deleted)."""

    # ------------------------------------------------------------ indices

    def create_index(self, index: str, body: dict[str, Any], *, exist_ok: bool = False) -> bool:
        if exist_ok and self.index_exists(index):
            return False
        try:
            with self._errors("create index", index):
                self._create(index, body)
        except BackendError as exc:
            if exc.error_type == "resource_already_exists_exception":
                if exist_ok:
                    return False
                raise BackendError(
                    f"index `{index}` already exists; pass exist_ok=True to reuse it or delete it first",
                    status=400,
                    error_type="resource_already_exists_exception",
                ) from exc
            raise
        self._forget(index)
        return True

    def delete_index(self, index: str, *, missing_ok: bool = True) -> bool:
        self._forget(index)
        try:
            with self._errors("delete index", index):
                self.client.indices.delete(index=index)
        except IndexNotFoundError:
            if missing_ok:
                return False
            raise
        return True

    def index_exists(self, index: str) -> bool:
        with self._errors("check index", index):
            return bool(self.client.indices.exists(index=index))

    def _stored_mapping(self, index: str) -> dict[str, Any]:
        """The mapping as the cluster stores it (keyed by the concrete index name, which differs for an alias)."""
        with self._errors("get mapping", index):
            response = response_body(self.client.indices.get_mapping(index=index))
        entry = response.get(index) or next(iter(response.values()), {})
        return entry.get("mappings", {})

    def get_mapping(self, index: str) -> dict[str, Any]:
        return self._stored_mapping(index)

    def list_indices(self) -> list[str]:
        with self._errors("list indices"):
            rows = response_body(self.client.cat.indices(format="json", h="index"))
        return sorted(r["index"] for r in rows if not r["index"].startswith("."))

    # ------------------------------------------------------------ documents

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        try:
            with self._errors("get document", index):
                response = response_body(self.client.get(index=index, id=doc_id))
        except IndexNotFoundError:
            raise
        except BackendError as exc:
            if exc.status == 404:
                return None
            raise
        return response.get("_source") if response.get("found", True) else None
