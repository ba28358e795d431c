"""Async search on OpenSearch (opensearch-py's AsyncOpenSearch over aiohttp), for async retrievers.

Only the read path is async (search, msearch, count, get): writes stay on the sync backend, whose
bulk writer owns retries and dead letters. Errors map to the same latentsearch error classes as
the sync backend, so callers handle one set of exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latentsearch.backends.base import BackendError, IndexNotFoundError
from latentsearch.backends.cluster import msearch_results
from latentsearch.backends.opensearch import client_kwargs, query_params, translate_errors
from latentsearch.config import BackendConfig

_AIOHTTP_HINT = "async OpenSearch needs aiohttp: pip install 'latentsearch[langchain]' (or 'opensearch-py[async]')"


class AsyncOpenSearchBackend:
    """The read half of `OpenSearchBackend` as coroutines (same arguments, same OpenSearch-shaped answers)."""

    kind = "opensearch"

    def __init__(self, client: Any, *, url: str = "") -> None:
        self.client = client
        self.url = url

    @classmethod
    def from_config(cls, config: BackendConfig) -> AsyncOpenSearchBackend:
        try:
            from opensearchpy import AsyncOpenSearch
        except ImportError as exc:  # opensearch-py imports AsyncOpenSearch lazily when aiohttp is present
            raise ImportError(_AIOHTTP_HINT) from exc
        kwargs = client_kwargs(config)
        if config.auth.kind == "aws_sigv4":
            import boto3
            from opensearchpy import AWSV4SignerAsyncAuth

            assert config.auth.aws_region
            kwargs["http_auth"] = AWSV4SignerAsyncAuth(
                boto3.Session().get_credentials(), config.auth.aws_region, config.auth.aws_service
            )
        return cls(AsyncOpenSearch(**kwargs), url=config.url or "")

    def _errors(self, action: str, index: str | None = None):
        return translate_errors(action, self.url, index)

    async def search(self, index: str, body: dict[str, Any], *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._errors("search", index):
            return await self.client.search(index=index, body=body, params=query_params(params))

    async def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not bodies:
            return []
        lines: list[dict[str, Any]] = []
        for body in bodies:
            lines += [{}, body]
        with self._errors("msearch", index):
            response = await self.client.msearch(index=index, body=lines)
        return msearch_results(response, len(bodies), index=index, url=self.url)

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        with self._errors("count", index):
            response = await self.client.count(index=index, body={"query": query} if query else None)
        return int(response["count"])

    async def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        try:
            with self._errors("get document", index):
                response = await self.client.get(index=index, id=doc_id)
        except IndexNotFoundError:
            raise
        except BackendError as exc:
            if exc.status == 404:
                return None
            raise
        return response.get("_source") if response.get("found", True) else None

    async def close(self) -> None:
        await self.client.close()
