"""What the OpenSearch and Elasticsearch backends share: the same REST resources (indices, mappings,
documents) behind two clients. Subclasses supply the client call for each step and `_errors`, the
translator of their client's exceptions; the rules (exist_ok, missing_ok, 404 on a missing document,
hidden indices) live once, here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from latentsearch.backends.base import (
    BackendError,
    BulkAction,
    BulkItemResult,
    IndexNotFoundError,
    SearchBackend,
    TransientBackendError,
)
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

    @abstractmethod
    def _send_bulk(self, index: str, operations: list[dict[str, Any]], refresh: bool) -> Any:
        """Send one `_bulk` request (action/source lines already built)."""

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

    def bulk(self, index: str, actions: Sequence[BulkAction], *, refresh: bool = False) -> list[BulkItemResult]:
        if not actions:
            return []
        with self._errors("bulk", index):
            response = response_body(self._send_bulk(index, bulk_operations(actions), refresh))
        return bulk_results(actions, response)

    def refresh(self, index: str) -> None:
        with self._errors("refresh", index):
            self.client.indices.refresh(index=index)

    def close(self) -> None:
        self.client.close()

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


# ------------------------------------------------------------ the wire format both clusters speak


def bulk_operations(actions: Sequence[BulkAction]) -> list[dict[str, Any]]:
    """The `_bulk` body (action line, then source line) shared by OpenSearch and Elasticsearch."""
    operations: list[dict[str, Any]] = []
    for action in actions:
        if action.op in ("index", "create"):
            if action.source is None:
                raise ValueError(f"bulk {action.op} action for id {action.id!r} has no source")
            operations.append({action.op: {"_id": action.id}})
            operations.append(action.source)
        elif action.op == "delete":
            operations.append({"delete": {"_id": action.id}})
        else:
            raise ValueError(f"unknown bulk op {action.op!r}; use index, create or delete")
    return operations


def bulk_results(actions: Sequence[BulkAction], response: dict[str, Any]) -> list[BulkItemResult]:
    """One BulkItemResult per action, in order, from a `_bulk` response (shared with Elasticsearch)."""
    items = response.get("items") or []
    if len(items) != len(actions):
        raise BackendError(
            f"bulk response has {len(items)} items for {len(actions)} actions; the cluster or a proxy "
            "altered the request",
            status=500,
            error_type="bulk_mismatch",
        )
    results: list[BulkItemResult] = []
    for action, item in zip(actions, items):
        ((_, detail),) = item.items()
        status = int(detail.get("status", 500))
        error = detail.get("error")
        if error is not None:
            reason, etype = error_reason({"error": error})
            results.append(
                BulkItemResult(
                    id=str(detail.get("_id", action.id)), status=status, error=reason, error_type=etype
                )
            )
        else:
            results.append(BulkItemResult(id=str(detail.get("_id", action.id)), status=status,
                                          result=detail.get("result")))
    return results


def msearch_results(response: dict[str, Any], expected: int, *, index: str, url: str) -> list[dict[str, Any]]:
    """The responses of an `_msearch`, in order; the first failed body raises (shared with Elasticsearch)."""
    responses = response.get("responses") or []
    if len(responses) != expected:
        raise BackendError(
            f"msearch returned {len(responses)} responses for {expected} searches",
            status=500,
            error_type="msearch_mismatch",
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(responses):
        if "error" in item:
            status = int(item.get("status", 500))
            err = status_error(status, item, action=f"msearch body #{i}", index=index, url=url)
            raise err
        out.append(item)
    return out


def error_reason(info: Any) -> tuple[str, str | None]:
    """(human reason, error type) from an OpenSearch/Elasticsearch error body."""
    if isinstance(info, dict):
        err = info.get("error", info)
        if isinstance(err, dict):
            root = (err.get("root_cause") or [{}])[0] or {}
            etype = err.get("type") or root.get("type")
            reason = err.get("reason") or root.get("reason") or str(err)
            caused = err.get("caused_by")
            if isinstance(caused, dict) and caused.get("reason") and caused.get("reason") not in reason:
                reason = f"{reason} (caused by {caused.get('type')}: {caused['reason']})"
            elif root.get("reason") and root["reason"] not in reason:
                # a real cluster's search errors say "all shards failed" on top; the why is the root cause
                reason = f"{reason} (root cause {root.get('type')}: {root['reason']})"
            return str(reason), etype
        if isinstance(err, str):
            return err, None
    return (str(info) if info else "no details"), None


def status_error(status: int, info: Any, *, action: str, index: str | None, url: str) -> BackendError:
    """The BackendError subclass for an HTTP error status from the cluster."""
    reason, etype = error_reason(info)
    where = f"{action}" + (f" on `{index}`" if index else "")
    if status == 404 and etype == "index_not_found_exception":
        return IndexNotFoundError(index or _index_from_error(info) or "?")
    if status in (429, 500, 502, 503, 504):
        hint = "the cluster is overloaded (429)" if status == 429 else "the cluster had a server-side error"
        return TransientBackendError(
            f"{where} failed after retries: HTTP {status} {etype or ''} {reason}; {hint}, retry later or "
            "lower ingest.write_batch_size",
            status=status,
        )
    if status == 401:
        return BackendError(
            f"{where}: authentication failed at {url} ({reason}); check backend.auth (username/password, "
            "api_key or AWS credentials)",
            status=401,
            error_type=etype or "authentication",
        )
    if status == 403:
        return BackendError(
            f"{where}: the credentials are not allowed to do this ({reason}); grant the user/role the "
            "needed index permissions",
            status=403,
            error_type=etype or "authorization",
        )
    if status == 413:
        return BackendError(
            f"{where}: request too large for the cluster ({reason}); lower ingest.write_batch_size",
            status=413,
            error_type=etype or "request_too_large",
        )
    return BackendError(
        f"{where} failed: HTTP {status} {etype or ''}: {reason}", status=status, error_type=etype or "error"
    )


def _index_from_error(info: Any) -> str | None:
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return info["error"].get("index")
    return None
