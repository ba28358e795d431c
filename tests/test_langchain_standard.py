"""LangChain's own standard suites (langchain-tests, written by the LangChain team) against the
embedded engine: the vector store suite with LangChain's deterministic fake embedding (so any
`Embeddings` object must work), the retriever suite with MiniLM on SciFact sample abstracts."""

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
from latentsearch.query.langchain import LatentSearchRetriever, LatentSearchVectorStore

RETRIEVER_INDEX = "scifact-lc-standard"
_SHARED: dict[str, Any] = {}


class TestLatentSearchVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, home: Path) -> Iterator[VectorStore]:
        store = LatentSearchVectorStore(self.get_embeddings(), index="lc-standard")
        try:
            yield store
        finally:
            store.backend.delete_index("lc-standard")


@pytest.fixture(scope="module", autouse=True)
def _scifact_index(tmp_path_factory: pytest.TempPathFactory, scifact_sample: Path, embedder) -> Iterator[None]:
    """20 SciFact sample abstracts in a private embedded engine, shared by the retriever suite."""
    from latentsearch.ingest.pipeline import ingest

    home = tmp_path_factory.mktemp("lc-retriever-home")
    settings = load_settings(home=home, index=RETRIEVER_INDEX)
    ingest(scifact_sample, settings, limit=20, progress=False)
    backend = open_backend(settings.backend)
    _SHARED.update(backend=backend, embedder=embedder)
    yield
    backend.close()


class TestLatentSearchRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[LatentSearchRetriever]:
        return LatentSearchRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"backend": _SHARED["backend"], "index": RETRIEVER_INDEX, "embedder": _SHARED["embedder"]}

    @property
    def retriever_query_example(self) -> str:
        return "diffusion tensor imaging of white matter in newborns"
