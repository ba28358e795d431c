"""OpenSearch backend over opensearch-py (the primary engine; requests go out as written).

Auth: basic, API key (`Authorization: ApiKey ...`), or AWS SigV4 for Amazon OpenSearch Service
(`es`) and OpenSearch Serverless (`aoss`) using boto3's default credential chain. The client
retries connection errors, timeouts and 429/502/503/504 itself (`max_retries`, no backoff between
tries); what still fails is raised as `TransientBackendError` so the bulk writer can back off and
try again, and everything else becomes a `BackendError` whose message says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from latentsearch.backends.base import (
    BackendError,
    BulkAction,
    BulkItemResult,
    IndexNotFoundError,
    TransientBackendError,
)
from latentsearch.backends.cluster import ClusterBackend, tls_kwargs
from latentsearch.config import BackendConfig

#: Statuses the client retries before giving up (500 is usually a real bug, so it is not retried).
RETRY_ON_STATUS: tuple[int, ...] = (429, 502, 503, 504)

_AWS_HINT = "AWS SigV4 auth needs boto3: pip install 'latentsearch[aws]'"


def aws_sigv4_auth(region: str, service: str = "es") -> Any:
    """A urllib3 SigV4 signer for opensearch-py using boto3's default credential chain
    (env vars, shared config/credentials files, SSO, container/instance roles)."""
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(_AWS_HINT) from exc
    from opensearchpy import Urllib3AWSV4SignerAuth

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise BackendError(
            "auth.kind=aws_sigv4 but boto3 found no AWS credentials; set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an IAM role is available",
            status=401,
            error_type="authentication",
        )
    return Urllib3AWSV4SignerAuth(credentials, region, service)


def client_kwargs(config: BackendConfig) -> dict[str, Any]:
    """`OpenSearch(**kwargs)` for a config: hosts, auth, TLS, timeout and retry policy."""
    if not config.url:
        raise ValueError("the opensearch backend needs a URL (backend.url)")
    kwargs: dict[str, Any] = {
        "hosts": [config.url],
        "timeout": config.timeout_s,
        "max_retries": config.max_retries,
        "retry_on_timeout": True,
        "retry_on_status": RETRY_ON_STATUS,
    }
    auth = config.auth
    if auth.kind == "basic":
        assert auth.username and auth.password  # validated by AuthConfig
        kwargs["http_auth"] = (auth.username, auth.password.get_secret_value())
    elif auth.kind == "api_key":
        assert auth.api_key
        kwargs["headers"] = {"Authorization": f"ApiKey {auth.api_key.get_secret_value()}"}
    elif auth.kind == "aws_sigv4":
        assert auth.aws_region
        kwargs["http_auth"] = aws_sigv4_auth(auth.aws_region, auth.aws_service)
    return {**kwargs, **tls_kwargs(config)}


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


def query_params(params: dict[str, Any] | None) -> dict[str, str] | None:
    """URL query params as OpenSearch spells them (`true`, not `True`; lists comma-joined)."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out or None


def _index_from_error(info: Any) -> str | None:
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return info["error"].get("index")
    return None


@contextmanager
def translate_errors(action: str, url: str, index: str | None = None) -> Iterator[None]:
    """Translate opensearch-py exceptions into latentsearch's error classes (sync and async clients)."""
    try:
        yield
    except os_exc.ConnectionTimeout as exc:
        raise TransientBackendError(
            f"{action}: no answer from {url} within the timeout after retries ({exc.error}); "
            "raise backend.timeout_s or check the cluster's load",
            status=504,
        ) from exc
    except os_exc.SSLError as exc:
        raise BackendError(
            f"{action}: TLS failed with {url} ({exc.error}); "
            "set backend.tls.ca_certs to the cluster's "
            "CA bundle (or backend.tls.verify=false for a self-signed test cluster)",
            status=502,
            error_type="tls_error",
        ) from exc
    except os_exc.ConnectionError as exc:
        raise TransientBackendError(
            f"{action}: cannot reach {url} ({exc.error}); is the cluster up and backend.url right?",
            status=503,
        ) from exc
    except os_exc.TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else 500
        raise status_error(status, exc.info, action=action, index=index, url=url) from exc


class OpenSearchBackend(ClusterBackend):
    """latentsearch's requests sent verbatim to an OpenSearch cluster."""

    kind = "opensearch"

    def __init__(self, client: OpenSearch, *, url: str = "", serverless: bool = False) -> None:
        self.client = client
        self.url = url
        # OpenSearch Serverless has no _refresh API (writes become visible on their own).
        self.serverless = serverless

    @classmethod
    def from_config(cls, config: BackendConfig) -> OpenSearchBackend:
        kwargs = client_kwargs(config)
        serverless = config.auth.kind == "aws_sigv4" and config.auth.aws_service == "aoss"
        return cls(OpenSearch(**kwargs), url=config.url or "", serverless=serverless)

    # ------------------------------------------------------------ error mapping

    def _errors(self, action: str, index: str | None = None):
        return translate_errors(action, self.url, index)

    # ------------------------------------------------------------ indices

    def _create(self, index: str, body: dict[str, Any]) -> None:
        self.client.indices.create(index=index, body=body)

    # ------------------------------------------------------------ documents

    def bulk(
        self, index: str, actions: Sequence[BulkAction], *, refresh: bool = False
    ) -> list[BulkItemResult]:
        if not actions:
            return []
        operations = bulk_operations(actions)
        params = {"refresh": "true"} if refresh and not self.serverless else None
        with self._errors("bulk", index):
            response = self.client.bulk(index=index, body=operations, params=params)
        return bulk_results(actions, response)

    def refresh(self, index: str) -> None:
        if self.serverless:
            return
        with self._errors("refresh", index):
            self.client.indices.refresh(index=index)

    # ------------------------------------------------------------ search

    def search(
        self, index: str, body: dict[str, Any], *, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._errors("search", index):
            return self.client.search(index=index, body=body, params=query_params(params))

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not bodies:
            return []
        lines: list[dict[str, Any]] = []
        for body in bodies:
            lines.append({})  # header: the index comes from the path
            lines.append(body)
        with self._errors("msearch", index):
            response = self.client.msearch(index=index, body=lines)
        return msearch_results(response, len(bodies), index=index, url=self.url)

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        with self._errors("count", index):
            response = self.client.count(index=index, body={"query": query} if query else None)
        return int(response["count"])

    def close(self) -> None:
        self.client.close()


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
