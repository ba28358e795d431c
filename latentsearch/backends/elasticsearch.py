"""Elasticsearch backend over elasticsearch-py 8.x/9.x, speaking OpenSearch-shaped dicts outside.

Requests are translated by `es_dialect` (dense_vector mappings, ES knn query syntax, hybrid → RRF
or linear retriever) and responses come back OpenSearch-shaped. Only keyword arguments that exist
in both the 8.x and 9.x clients are used (`settings=`/`mappings=`, `operations=`, `searches=`,
named search-body parameters). Use the client major that matches the server: a 9.x client sends
`compatible-with=9` headers that an 8.x server refuses.

Version floor of the features used: knn as a query ES 8.12 (`k` inside it 8.15, see `emit_knn_k`),
RRF retriever 8.16, linear retriever 8.18/9.0.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import elasticsearch
from elasticsearch import Elasticsearch

from latentsearch.backends import es_dialect
from latentsearch.backends.base import (
    BackendError,
    TransientBackendError,
)
from latentsearch.backends.cluster import ClusterBackend, status_error, tls_kwargs
from latentsearch.backends.opensearch import RETRY_ON_STATUS
from latentsearch.config import BackendConfig

# OpenSearch body keys whose elasticsearch-py keyword differs.
_BODY_KEY_TO_KWARG = {"from": "from_", "_source": "source"}


def client_kwargs(config: BackendConfig) -> dict[str, Any]:
    """`Elasticsearch(**kwargs)` for a config (keywords valid for elasticsearch-py 8 and 9)."""
    if not config.url:
        raise ValueError("the elasticsearch backend needs a URL (backend.url)")
    kwargs: dict[str, Any] = {
        "hosts": [config.url],
        "request_timeout": config.timeout_s,
        "max_retries": config.max_retries,
        "retry_on_timeout": True,
        "retry_on_status": RETRY_ON_STATUS,
    }
    auth = config.auth
    if auth.kind == "basic":
        assert auth.username and auth.password
        kwargs["basic_auth"] = (auth.username, auth.password.get_secret_value())
    elif auth.kind == "api_key":
        assert auth.api_key
        kwargs["api_key"] = auth.api_key.get_secret_value()  # the encoded id:key Kibana shows
    elif auth.kind == "aws_sigv4":
        raise ValueError(
            "auth.kind=aws_sigv4 signs requests for Amazon OpenSearch Service, which is OpenSearch: "
            "use backend.kind=opensearch (Elasticsearch takes basic or api_key auth)"
        )
    return {**kwargs, **tls_kwargs(config)}


class ElasticsearchBackend(ClusterBackend):
    """OpenSearch DSL in, OpenSearch-shaped responses out, Elasticsearch underneath.

    `hybrid`: how a top-level `hybrid` query is expressed — `rrf` (rank fusion, ES ≥ 8.16) or
    `linear` (min-max normalised weighted sum like OpenSearch's normalization-processor, ES ≥ 8.18).
    `radial_candidates`: how many nearest candidates a radial (min_score/max_distance) knn inspects.
    `emit_knn_k`: False for ES 8.12–8.14, whose knn query has no `k`.
    """

    kind = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        *,
        url: str = "",
        hybrid: es_dialect.HybridMode = "rrf",
        radial_candidates: int = 1000,
        emit_knn_k: bool = True,
    ) -> None:
        self.client = client
        self.url = url
        self.hybrid = hybrid
        self.radial_candidates = radial_candidates
        self.emit_knn_k = emit_knn_k
        self._similarities: dict[str, dict[str, str]] = {}
        self._search_kwargs = {
            name
            for name, p in inspect.signature(Elasticsearch.search).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("index", "body")
        }

    @classmethod
    def from_config(cls, config: BackendConfig) -> ElasticsearchBackend:
        return cls(Elasticsearch(**client_kwargs(config)), url=config.url or "")

    # ------------------------------------------------------------ error mapping

    @contextmanager
    def _errors(self, action: str, index: str | None = None) -> Iterator[None]:
        """Translate elasticsearch-py / elastic-transport exceptions into latentsearch's classes."""
        try:
            yield
        except elasticsearch.ConnectionTimeout as exc:
            raise TransientBackendError(
                f"{action}: no answer from {self.url} within the timeout after retries ({exc}); "
                "raise backend.timeout_s or check the cluster's load",
                status=504,
            ) from exc
        except elasticsearch.SSLError as exc:
            raise BackendError(
                f"{action}: TLS failed with {self.url} ({exc}); set backend.tls.ca_certs to the cluster's CA "
                "(Elasticsearch's http_ca.crt) or backend.tls.verify=false for a test cluster",
                status=502,
                error_type="tls_error",
            ) from exc
        except elasticsearch.ConnectionError as exc:
            raise TransientBackendError(
                f"{action}: cannot reach {self.url} ({exc}); is the cluster up and backend.url right?",
                status=503,
            ) from exc
        except elasticsearch.UnsupportedProductError as exc:
            raise BackendError(
                f"{action}: {self.url} is not Elasticsearch ({exc}); "
                "for OpenSearch use backend.kind=opensearch",
                status=400,
                error_type="unsupported_product",
            ) from exc
        except elasticsearch.ApiError as exc:
            raise status_error(
                int(exc.meta.status), exc.body, action=action, index=index, url=self.url
            ) from exc

    # ------------------------------------------------------------ indices

    def _create(self, index: str, body: dict[str, Any]) -> None:
        es_body = es_dialect.create_index_body(body)
        kwargs = {k: es_body[k] for k in ("settings", "mappings", "aliases") if es_body.get(k)}
        self.client.indices.create(index=index, **kwargs)

    def _forget(self, index: str) -> None:
        self._similarities.pop(index, None)

    def get_mapping(self, index: str) -> dict[str, Any]:
        return es_dialect.from_elasticsearch_mappings(self._stored_mapping(index))

    # ------------------------------------------------------------ documents

    def _send_bulk(self, index: str, operations: list[dict[str, Any]], refresh: bool) -> Any:
        return self.client.bulk(index=index, operations=operations, **({"refresh": True} if refresh else {}))

    # ------------------------------------------------------------ search

    def _translator(self, index: str) -> es_dialect.QueryTranslator:
        """A translator whose similarity lookup reads the mapping only when a radial knn needs it."""

        def similarity_of(field: str) -> str | None:
            if index not in self._similarities:
                self._similarities[index] = es_dialect.vector_similarities(self._stored_mapping(index))
            return self._similarities[index].get(field)

        return es_dialect.QueryTranslator(
            similarity_of=similarity_of, radial_candidates=self.radial_candidates, emit_k=self.emit_knn_k
        )

    def translate(
        self, index: str, body: dict[str, Any], params: dict[str, Any] | None = None
    ) -> tuple[dict, dict]:
        """The ES search body and params for an OpenSearch body (public so callers can inspect it)."""
        return es_dialect.translate_search_body(
            body, params=params, translator=self._translator(index), hybrid=self.hybrid
        )

    def _search_kwargs_for(self, es_body: dict[str, Any], es_params: dict[str, Any]) -> dict[str, Any]:
        """Named keyword arguments when this client version knows every body key (the form both
        8.x and 9.x prefer); otherwise the whole body as `body=` (e.g. `retriever` on clients older
        than 8.14), which both majors still accept for search."""
        for key in es_params:
            if key not in self._search_kwargs:
                raise BackendError(
                    f"search parameter `{key}` is not supported by Elasticsearch's search API "
                    f"(elasticsearch-py {elasticsearch.__versionstr__}); remove it for this backend",
                    status=400,
                    error_type="unsupported_in_elasticsearch",
                )
        named = {_BODY_KEY_TO_KWARG.get(key, key): value for key, value in es_body.items()}
        if all(name in self._search_kwargs for name in named):
            return {**named, **es_params}
        return {"body": es_body, **es_params}

    def search(
        self, index: str, body: dict[str, Any], *, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        es_body, es_params = self.translate(index, body, params)
        kwargs = self._search_kwargs_for(es_body, es_params)
        with self._errors("search", index):
            response = self.client.search(index=index, **kwargs).body
        return es_dialect.translate_search_response(response)

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not bodies:
            return []
        searches: list[dict[str, Any]] = []
        for body in bodies:
            es_body, es_params = self.translate(index, body)
            if es_params:
                raise BackendError(f"msearch bodies cannot carry query params ({sorted(es_params)})")
            searches.append({})
            searches.append(es_body)
        with self._errors("msearch", index):
            response = self.client.msearch(index=index, searches=searches).body
        responses = response.get("responses") or []
        if len(responses) != len(bodies):
            raise BackendError(
                f"msearch returned {len(responses)} responses for {len(bodies)} searches",
                status=500,
                error_type="msearch_mismatch",
            )
        out: list[dict[str, Any]] = []
        for i, item in enumerate(responses):
            if "error" in item:
                raise status_error(
                    int(item.get("status", 500)), item, action=f"msearch body #{i}", index=index, url=self.url
                )
            out.append(es_dialect.translate_search_response(item))
        return out

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        kwargs: dict[str, Any] = {}
        if query:
            kwargs["query"] = self._translator(index).query(query)
        with self._errors("count", index):
            response = self.client.count(index=index, **kwargs).body
        return int(response["count"])
