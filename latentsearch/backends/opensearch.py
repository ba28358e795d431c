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
    TransientBackendError,
)
from latentsearch.backends.cluster import ClusterBackend, msearch_results, status_error, tls_kwargs
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

    def _send_bulk(self, index: str, operations: list[dict[str, Any]], refresh: bool) -> Any:
        params = {"refresh": "true"} if refresh and not self.serverless else None
        return self.client.bulk(index=index, body=operations, params=params)

    def refresh(self, index: str) -> None:
        if not self.serverless:  # OpenSearch Serverless has no _refresh: writes become visible on their own
            super().refresh(index)

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

