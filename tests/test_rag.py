"""RAG answers with citations: the grounded prompt, citation parsing, not-in-context detection, the
OpenAI-compatible client over real HTTP, `latentsearch ask` / `eval rag`, and the local SmolLM2.

The chat endpoint in most tests is a real HTTP server whose *model* is scripted (the code under test is
the RAG pipeline and its client, not the model); one test answers with the real SmolLM2.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from latentsearch import load_settings
from latentsearch.backends import open_backend
from latentsearch.cli import app
from latentsearch.config import RagConfig
from latentsearch.query.rag import (
    NOT_IN_CONTEXT,
    LocalLLM,
    OpenAICompatibleLLM,
    Passage,
    answer_from_passages,
    ask,
    build_messages,
    is_refusal,
    marker_citations,
)
from latentsearch.query.search import search

INDEX = "rag-sample"
N_DOCS = 20


@pytest.fixture(scope="module")
def sample(scifact_sample: Path) -> list[dict[str, Any]]:
    with scifact_sample.open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(N_DOCS), fh)]


@pytest.fixture(scope="module")
def rag_home(tmp_path_factory: pytest.TempPathFactory, scifact_sample: Path, embedder) -> Path:
    from latentsearch.ingest.pipeline import ingest

    home = tmp_path_factory.mktemp("rag-home")
    ingest(scifact_sample, load_settings(home=home, index=INDEX), limit=N_DOCS, progress=False)
    return home


@pytest.fixture()
def rag_env(rag_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("LATENTSEARCH_HOME", str(rag_home))
    monkeypatch.delenv("LATENTSEARCH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return rag_home


class ScriptedChat:
    """A chat endpoint's model: replies from a script (a function of the prompt), recording prompts."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []

    def app(self):
        from fastapi import FastAPI, Header, HTTPException

        api = FastAPI()

        @api.post("/v1/chat/completions")
        def chat(body: dict, authorization: str | None = Header(None)) -> dict:
            if authorization != "Bearer secret":
                raise HTTPException(401, "bad key")
            self.requests.append(body)
            content = self.reply(body["messages"][-1]["content"])
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

        return api


@pytest.fixture()
def chat_server():
    import uvicorn

    servers = []

    def start(reply) -> tuple[str, ScriptedChat]:
        model = ScriptedChat(reply)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(model.app(), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 60
        while not server.started:  # fail here, not later with a confusing connection error
            if not thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"the scripted chat server on port {port} did not start within 60 s")
            time.sleep(0.05)
        servers.append(server)
        return f"http://127.0.0.1:{port}/v1", model

    yield start
    for server in servers:
        server.should_exit = True


def _passages(sample: list[dict[str, Any]], n: int = 3) -> list[Passage]:
    return [Passage(n=i + 1, doc_id=d["_id"], chunk_id=f"{d['_id']}#0", title=d["title"], text=d["text"])
            for i, d in enumerate(sample[:n])]


def test_grounded_prompt_numbers_passages_by_doc_id(sample) -> None:
    passages = _passages(sample)
    system, user = build_messages("What does diffusion MRI show?", passages, passage_chars=200)
    assert NOT_IN_CONTEXT in system["content"] and system["role"] == "system"
    heads = re.findall(r"^\[(\d)\] \(doc (\w+)\)", user["content"], re.MULTILINE)
    assert heads == [(str(p.n), p.doc_id) for p in passages]
    assert user["content"].rstrip().endswith(f"reply exactly: {NOT_IN_CONTEXT}.")
    assert all(len(block) < 200 + 250 for block in user["content"].split("\n\n")[:3])  # passages were cut


def test_citations_and_refusals(sample) -> None:
    p = _passages(sample)
    ids = [x.doc_id for x in p]
    assert marker_citations("Yes [2].", p) == [ids[1]]
    assert marker_citations("It does [1, 3] and [doc " + ids[1] + "]", p) == [ids[0], ids[2], ids[1]]
    assert marker_citations("as doc " + ids[2] + " reports", p) == [ids[2]]
    assert marker_citations("see [7] and [x]", p) == []
    for text in ("NOT IN CONTEXT", "The context does not contain this.", "This cannot be answered.", ""):
        assert is_refusal(text)
    assert not is_refusal("White matter anisotropy rises with age [1].")


def test_answers_over_openai_compatible_http(sample, chat_server, embedder) -> None:
    p = _passages(sample)
    url, model = chat_server(lambda prompt: "Anisotropy increases with age [1]." if "white matter" in prompt
                             else NOT_IN_CONTEXT)
    llm = OpenAICompatibleLLM(url, "SmolLM2-135M-Instruct", api_key="secret")
    cfg = RagConfig(max_new_tokens=20)
    good = answer_from_passages("How does white matter develop?", p, llm, config=cfg, embedder=embedder)
    assert good.supported and good.citations == [p[0].doc_id] and good.citation_source == "markers"
    assert good.retrieved == [x.doc_id for x in p] and model.requests[-1]["max_tokens"] == 20
    refused = answer_from_passages("What is the capital of France?", p[1:], llm, config=cfg, embedder=embedder)
    assert not refused.supported and refused.citations == [] and refused.text.startswith(NOT_IN_CONTEXT)
    # no markers: the answer is attributed to the passage it paraphrases, if any
    url2, _ = chat_server(lambda prompt: sample[2]["text"][:300])
    para = answer_from_passages("q", p, OpenAICompatibleLLM(url2, "m", api_key="secret"), embedder=embedder)
    assert para.citations == [p[2].doc_id] and para.citation_source == "similarity"
    url3, _ = chat_server(lambda prompt: "Bananas are yellow and grow in bunches.")
    unrelated = answer_from_passages("q", p, OpenAICompatibleLLM(url3, "m", api_key="secret"), embedder=embedder)
    assert not unrelated.supported and "could not be traced" in unrelated.text
    with pytest.raises(RuntimeError, match="401"):
        OpenAICompatibleLLM(url, "m", api_key="wrong").complete([{"role": "user", "content": "hi"}], max_tokens=4)


def test_ask_cli_json_through_the_endpoint_and_errors(rag_env, chat_server) -> None:
    url, model = chat_server(lambda prompt: "It shows maturation of white matter [1].")
    runner = CliRunner()
    res = runner.invoke(app, ["ask", "diffusion tensor imaging of newborn white matter", "--index", INDEX,
                              "--llm-url", url, "--k", "3", "--json"], env={"LATENTSEARCH_RAG__API_KEY": "secret"})
    assert res.exit_code == 0, res.output
    answer = json.loads(res.stdout)
    assert answer["supported"] and answer["citations"] == [answer["retrieved"][0]] == ["4983"]
    assert len(answer["retrieved"]) == 3 and [p["n"] for p in answer["passages"]] == [1, 2, 3]
    assert "(doc 4983)" in model.requests[-1]["messages"][-1]["content"]
    missing = runner.invoke(app, ["ask", "q", "--index", "no-such-index", "--llm-url", url])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_eval_rag_support_rate_matches_retrieval(rag_env, chat_server, embedder, scifact_sample: Path) -> None:
    """A model that always cites passage [1]: the support rate must equal the share of questions whose top
    document (by an independent plain search) is relevant."""
    url, _ = chat_server(lambda prompt: "Supported by [1].")
    queries = Path(scifact_sample).with_name("scifact-sample-queries.jsonl")
    res = CliRunner().invoke(app, ["eval", "rag", "--queries", str(queries), "--index", INDEX, "--limit", "6",
                                   "--variants", "dense", "--llm-url", url, "--out", "rag.json", "--json"],
                             env={"LATENTSEARCH_RAG__API_KEY": "secret"})
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    backend = open_backend(load_settings().backend)
    judged = [json.loads(line) for line in queries.read_text().splitlines()][:6]
    top1 = [search(q["text"], backend=backend, index=INDEX, embedder=embedder, k=1).hits[0].doc_id for q in judged]
    expected = sum(t in q["relevant"] for t, q in zip(top1, judged)) / 6
    (dense,) = report["results"]
    assert report["questions"] == 6 and dense["support_rate"] == round(expected, 4)
    assert dense["grounded_rate"] == 1.0 and dense["not_in_context_rate"] == 0.0
    streamed = [json.loads(line) for line in Path("rag.rows.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in streamed] == [q["_id"] for q in judged]
    assert json.loads(Path("rag.json").read_text())["rows"] == streamed


@pytest.mark.slow  # SmolLM2 generation: ~10 s on idle cores, minutes when the 2 cores are shared
def test_ask_with_the_local_smollm2(rag_env, embedder) -> None:
    """The real model end to end (short answer): whatever it says, the Answer must be consistent."""
    settings = load_settings(index=INDEX, rag={"max_new_tokens": 24, "k": 2, "passage_chars": 300})
    answer = ask("How does the white matter of newborns develop?", settings, embedder=embedder,
                 llm=LocalLLM())
    assert answer.model == "SmolLM2-135M-Instruct" and answer.retrieved and answer.retrieved[0] == "4983"
    assert set(answer.citations) <= set(answer.retrieved)
    assert answer.supported == bool(answer.citations) and answer.text.strip()
    assert answer.supported or answer.text.startswith(NOT_IN_CONTEXT)


@pytest.mark.slow  # starts the model server and generates with SmolLM2
def test_rag_route_on_the_model_server(rag_home: Path) -> None:
    """POST /rag on the real app (embedder, rewriter and the batched SmolLM2 of the server)."""
    import httpx

    from latentsearch.onnx_export.serve import ServeConfig, create_app

    settings = load_settings(home=rag_home, index=INDEX, rag={"max_new_tokens": 12, "k": 2, "passage_chars": 300})
    app_ = create_app(ServeConfig(api_key="k", settings=settings))
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app_, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    try:
        deadline = time.time() + 120
        while not server.started and time.time() < deadline:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=600) as client:
            res = client.post("/rag", json={"question": "How does the white matter of newborns develop?"})
            assert res.status_code == 200, res.text
            answer = res.json()
            assert answer["retrieved"][0] == "4983" and len(answer["retrieved"]) == 2
            assert set(answer["citations"]) <= set(answer["retrieved"])
            assert answer["supported"] == bool(answer["citations"])
            assert client.post("/rag", json={"question": "q", "index": "nope"}).status_code == 404
            assert client.post("/rag", json={"question": ""}).status_code == 422
            assert httpx.post(f"{url}/rag", json={"question": "q"}).status_code == 401
        # LCEL: our retriever -> grounded prompt -> LangChain's ChatOpenAI pointed at the server's /v1
        lc_openai = pytest.importorskip("langchain_openai")
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.runnables import RunnableLambda, RunnablePassthrough

        from latentsearch.query.langchain import LatentSearchRetriever
        from latentsearch.query.rag import passages_from_documents

        retriever = LatentSearchRetriever(backend=open_backend(settings.backend), index=INDEX, k=2)
        chat = lc_openai.ChatOpenAI(base_url=f"{url}/v1", api_key="k", model="SmolLM2-135M-Instruct", temperature=0, max_tokens=12)
        to_messages = RunnableLambda(lambda x: build_messages(x["question"], passages_from_documents(x["docs"]), 300))
        chain = {"docs": retriever, "question": RunnablePassthrough()} | to_messages | chat | StrOutputParser()
        reply = chain.invoke("How does the white matter of newborns develop?")
        assert isinstance(reply, str) and reply.strip()
    finally:
        server.should_exit = True
