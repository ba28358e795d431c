"""Every entry point asks the same `Retriever` (query/retrieval.py) and so gives the same hits for the same
question and settings: `latentsearch search`, `POST /search`, `ask`, `POST /rag` and the LangChain
retriever, on a real embedded index whose chunks carry latent values from the real LentEx extractor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsearch.config import Settings

INDEX = "entry"
N_DOCS = 10
K = 5


class FirstPassageLLM:
    """Answers by citing passage [1]: the answer is not under test here, the retrieval behind it is."""

    name = "first-passage"

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        return "See [1]."


@pytest.fixture(scope="module")
def latent_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """(settings, config file): 10 SciFact sample abstracts with `research_field` read from their titles."""
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.samples import SAMPLE_CORPUS

    root = tmp_path_factory.mktemp("entry-points")
    entities = {"text_type": "biomedical article title",
                "latent_types": [{"name": "research_field", "description": "research field"}]}
    settings = Settings(index=INDEX, home=root / "home", entities=entities,
                        ingest={"latent_input": "title", "extract_batch_size": 8})
    report = ingest(SAMPLE_CORPUS, settings, limit=N_DOCS, progress=False)
    assert report.records_read == N_DOCS and report.rejected == 0
    config = root / "latentsearch.toml"
    config.write_text(f'index = "{INDEX}"\nhome = "{settings.home}"\n', encoding="utf-8")
    return settings, config


@pytest.fixture(scope="module")
def question() -> str:
    from latentsearch.samples import SAMPLE_CORPUS

    first = json.loads(SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[0])
    return first["title"]


def test_every_entry_point_gives_the_same_hits(latent_index, question, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from latentsearch.cli import app
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from latentsearch.query.langchain import LatentSearchRetriever
    from latentsearch.query.rag import ask
    from latentsearch.query.retrieval import Retriever

    settings, config = latent_index
    monkeypatch.setenv("LATENTSEARCH_HOME", str(settings.home))

    direct = Retriever.from_settings(settings).search(question, k=K)
    assert direct.rewritten and direct.explanation["reason"]  # a latent index: the rewriter decided
    expected = [h.doc_id for h in direct.hits]
    assert len(expected) == K

    result = CliRunner().invoke(app, ["search", question, "--config", str(config), "--k", str(K), "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert cli["rewritten"] is True and [h["doc_id"] for h in cli["hits"]] == expected

    with TestClient(create_app(ServeConfig(settings=settings, preload=[]))) as client:
        served = client.post("/search", json={"query": question, "k": K}).json()
        assert served["rewritten"] is True and [h["doc_id"] for h in served["hits"]] == expected
        rag = client.post("/rag", json={"question": question, "k": K, "max_tokens": 4}).json()
        assert rag["rewriter"] is True and rag["retrieved"] == expected

    answer = ask(question, settings, llm=FirstPassageLLM(), k=K)
    assert answer.rewriter is True and answer.retrieved == expected

    docs = LatentSearchRetriever.from_settings(settings, k=K).invoke(question)
    assert [d.metadata["doc_id"] for d in docs] == expected
    assert docs[0].metadata["explanation"]["reason"] == direct.explanation["reason"]


def test_the_decision_is_plain_search_when_latent_filtering_is_off(latent_index, question) -> None:
    from latentsearch.query.retrieval import Retriever

    settings, _ = latent_index
    retriever = Retriever.from_settings(settings)
    assert retriever.uses_rewriter(mode="dense") and retriever.uses_rewriter(mode="hybrid")
    assert not retriever.uses_rewriter(mode="bm25")
    assert not retriever.uses_rewriter(mode="dense", strictness="none")
    assert not retriever.uses_rewriter(mode="dense", collapse=False)
    assert not retriever.uses_rewriter(mode="dense", rewrite=False)
    assert not Retriever.from_settings(settings, latent=False).uses_rewriter(mode="dense")
    plain = retriever.search(question, k=K, rewrite=False)
    assert plain.rewritten is False and plain.explanation is None
    with pytest.raises(ValueError, match="strictness"):
        retriever.search(question, k=K, strictness="often", rewrite=False)  # validated on every path


FUSIONS = [("rrf", None), ("min_max", (1.0, 0.0)), ("min_max", (0.0, 1.0))]  # BM25 only, then k-NN only


def test_fusion_and_weights_reach_ask_rag_and_the_langchain_retriever(latent_index, question, monkeypatch) -> None:
    """`--fusion`/`--weights` used to stop at `search` and /search: `ask`, /rag and the LangChain retriever fused
    hybrid hits with the defaults whatever was asked. Each now retrieves what `Retriever.search` gives for the same
    fusion, and the settings give different rankings here, so a dropped setting shows."""
    from fastapi.testclient import TestClient

    from latentsearch.cli import app
    from latentsearch.onnx_export.serve import ServeConfig, create_app
    from latentsearch.query.langchain import LatentSearchRetriever
    from latentsearch.query.rag import ask
    from latentsearch.query.retrieval import Retriever

    settings, config = latent_index
    monkeypatch.setenv("LATENTSEARCH_HOME", str(settings.home))
    retriever = Retriever.from_settings(settings)
    expected = {(f, w): [h.doc_id for h in retriever.search(question, k=K, mode="hybrid", fusion=f, weights=w).hits]
                for f, w in FUSIONS}
    assert len({tuple(v) for v in expected.values()}) > 1, expected  # the settings matter on this index
    lc = LatentSearchRetriever.from_settings(settings, k=K, search_type="hybrid")
    with TestClient(create_app(ServeConfig(settings=settings, preload=[]))) as client:
        for (fusion, weights), hits in expected.items():
            answer = ask(question, settings, llm=FirstPassageLLM(), k=K, search_type="hybrid", fusion=fusion,
                         weights=weights)
            assert answer.retrieved == hits, (fusion, weights)
            body = {"question": question, "k": K, "mode": "hybrid", "fusion": fusion, "weights": weights,
                    "max_tokens": 2}
            rag = client.post("/rag", json=body)
            assert rag.status_code == 200 and rag.json()["retrieved"] == hits, (fusion, weights, rag.text)
            docs = lc.invoke(question, fusion=fusion, weights=weights)
            assert [d.metadata["doc_id"] for d in docs] == hits, (fusion, weights)
            fixed = LatentSearchRetriever.from_settings(settings, k=K, search_type="hybrid", fusion=fusion,
                                                        weights=weights)
            assert [d.metadata["doc_id"] for d in fixed.invoke(question)] == hits
        # unknown values are refused with the supported ones, on every path
        bad = client.post("/rag", json={"question": question, "mode": "hybrid", "fusion": "z_score"})
        assert bad.status_code == 422 and "rrf" in bad.text and "min_max" in bad.text
        bad = client.post("/rag", json={"question": question, "mode": "hybrid", "fusion": "rrf", "weights": [1, 0]})
        assert bad.status_code == 422 and "no weights" in bad.text
    with pytest.raises(ValueError, match="rrf or min_max"):
        ask(question, settings, llm=FirstPassageLLM(), k=K, search_type="hybrid", fusion="z_score")
    with pytest.raises(ValueError, match="rrf or min_max"):
        lc.invoke(question, fusion="z_score")
    with pytest.raises(ValueError, match="rrf or min_max"):
        retriever.search(question, k=K, fusion="z_score")  # dense: refused too, never silently ignored

    # the CLI: `ask --fusion/--weights` reaches the retrieval (the answer is the local LLM's, two tokens)
    fusion, weights = FUSIONS[1]
    result = CliRunner().invoke(app, ["ask", question, "--config", str(config), "--k", str(K), "--mode", "hybrid",
                                      "--fusion", fusion, "--weights", ",".join(map(str, weights)),
                                      "--max-tokens", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["retrieved"] == expected[(fusion, weights)]
    result = CliRunner().invoke(app, ["ask", question, "--config", str(config), "--fusion", "z_score"])
    assert result.exit_code != 0 and "rrf or min_max" in result.output
