"""LangChain's own standard suites (langchain-tests) against the real OpenSearch node: the vector store suite
with LangChain's deterministic fake embedding, the retriever suite with MiniLM on 20 SciFact sample abstracts
ingested by latentsearch's pipeline into the node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from latentsearch import load_settings
from latentsearch.backends import open_backend
from latentsearch.config import BackendConfig
from latentsearch.query.langchain import LatentSearchRetriever, LatentSearchVectorStore

pytestmark = pytest.mark.opensearch_node

RETRIEVER_INDEX = "scifact-lc-standard-node"
_SHARED: dict[str, Any] = {}


def _node_backend(url: str):
    return open_backend(BackendConfig(kind="opensearch", url=url, timeout_s=30.0, max_retries=1))


class TestLatentSearchVectorStoreOnOpenSearch(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, home: Path, opensearch_node) -> Iterator[VectorStore]:
        backend = _node_backend(opensearch_node.url)
        backend.delete_index("lc-standard-node")
        store = LatentSearchVectorStore(self.get_embeddings(), index="lc-standard-node", backend=backend)
        try:
            yield store
        finally:
            backend.delete_index("lc-standard-node")
            backend.close()


@pytest.fixture(scope="module")
def _scifact_index(opensearch_node, tmp_path_factory: pytest.TempPathFactory, scifact_sample: Path,
                   embedder) -> Iterator[None]:
    from latentsearch.ingest.pipeline import ingest

    home = tmp_path_factory.mktemp("lc-retriever-node-home")
    settings = load_settings(home=home, index=RETRIEVER_INDEX)
    backend = _node_backend(opensearch_node.url)
    backend.delete_index(RETRIEVER_INDEX)
    report = ingest(scifact_sample, settings, limit=20, progress=False, backend=backend)
    assert report.rejected == 0 and backend.count(RETRIEVER_INDEX) >= 20
    _SHARED.update(backend=backend, embedder=embedder)
    yield
    backend.delete_index(RETRIEVER_INDEX)
    backend.close()


@pytest.mark.usefixtures("_scifact_index")
class TestLatentSearchRetrieverOnOpenSearch(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[LatentSearchRetriever]:
        return LatentSearchRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"backend": _SHARED["backend"], "index": RETRIEVER_INDEX, "embedder": _SHARED["embedder"]}

    @property
    def retriever_query_example(self) -> str:
        return "diffusion tensor imaging of white matter in newborns"
