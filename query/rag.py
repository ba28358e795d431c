"""Grounded answers with citations: retrieve, number the passages by document id, ask the LLM to
answer from them only, keep the citations that point at real passages, and say so when the context
does not hold the answer.

Small models (SmolLM2-135M on CPU) rarely write citation markers reliably, so a citation is either
a marker the model wrote (`[2]`, `[doc 4983]`) or, failing that, the passage the answer is closest
to in embedding space when that similarity clears `support_threshold`. An answer with no citation
is reported as unsupported rather than dressed up as grounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from latentsearch.config import RagConfig, Settings
from latentsearch.protocols import ChatLLM

NOT_IN_CONTEXT = "NOT IN CONTEXT"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Cite the passages you use as [1], [2]. "
    f"If the passages do not contain the answer, reply exactly: {NOT_IN_CONTEXT}."
)
_REFUSALS = re.compile(
    r"not in (the )?context|(context|passages?) (does|do) not (contain|mention|say|provide)|"
    r"cannot be (answered|determined)|no (relevant )?information|i (do not|don't) know|"
    r"answer is not (provided|given|stated|available)",
    re.IGNORECASE,
)
_MARKER = re.compile(r"\[(?:doc(?:ument)?\s*)?([^\[\]]{1,40})\]", re.IGNORECASE)


class Passage(BaseModel):
    """One numbered context passage (a retrieved chunk)."""

    n: int = Field(description="1-based number used in the prompt and in [n] citations")
    doc_id: str
    chunk_id: str | None = None
    title: str | None = None
    text: str
    score: float | None = None


class Answer(BaseModel):
    """`latentsearch ask --json` and `/rag` return exactly this (fields are only ever added)."""

    question: str
    text: str = Field(description="The model's answer (or a not-in-context statement)")
    citations: list[str] = Field(description="Doc ids the answer is grounded in")
    supported: bool = Field(description="False when the context does not contain the answer")
    retrieved: list[str] = Field(description="Doc ids of the context passages, in prompt order")
    citation_source: str = Field(description="markers (the model cited), similarity (attributed), or none")
    passages: list[Passage] = Field(default_factory=list)
    explanation: dict[str, Any] | None = Field(None, description="The rewriter's explanation of the retrieval")
    rewriter: bool = False
    model: str
    took_ms: float


class LocalLLM:
    """A local chat model (SmolLM2-135M-Instruct by default) with greedy decoding."""

    def __init__(self, model: str = "SmolLM2-135M-Instruct", device: str = "cpu"):
        self.name = model
        self.device = device

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        import torch

        from latentsearch.models.llm import load_llm

        lm = load_llm(self.name, self.device)
        prompt = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            out = lm.model.generate(**enc, do_sample=False, max_new_tokens=max_tokens,
                                    pad_token_id=lm.tokenizer.pad_token_id, repetition_penalty=1.1)
        return lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class OpenAICompatibleLLM:
    """Any `/v1/chat/completions` endpoint: our model server, vLLM, TGI, llama.cpp, OpenAI."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout_s = timeout_s

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        import httpx

        url = self.base_url if self.base_url.endswith("/chat/completions") else self.base_url + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        payload = {"model": self.name, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens}
        try:
            resp = httpx.post(url, json=payload, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as err:
            raise RuntimeError(f"cannot reach the LLM endpoint {url}: {err}; check rag.base_url") from err
        if resp.status_code >= 400:
            raise RuntimeError(f"LLM endpoint {url} answered {resp.status_code}: {resp.text[:300]}")
        try:
            return str(resp.json()["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, ValueError) as err:
            raise RuntimeError(f"LLM endpoint {url} did not answer in the chat-completions format: {resp.text[:300]}") from err


def llm_from_settings(settings: Settings) -> ChatLLM:
    """The endpoint when `rag.base_url` is set, else the local `models.llm`."""
    rag = settings.rag
    if rag.base_url:
        key = rag.api_key.get_secret_value() if rag.api_key else None
        return OpenAICompatibleLLM(rag.base_url, rag.model or settings.models.llm, key, rag.timeout_s)
    return LocalLLM(rag.model or settings.models.llm, settings.models.device)


# ---------------------------------------------------------------- prompt


def passages_from_hits(hits: Sequence[Any]) -> list[Passage]:
    """Numbered passages from search hits (latentsearch Hit objects), one per document."""
    out: list[Passage] = []
    seen: set[str] = set()
    for h in hits:
        if h.doc_id in seen:
            continue
        seen.add(h.doc_id)
        out.append(Passage(n=len(out) + 1, doc_id=h.doc_id, chunk_id=h.id, title=h.title, text=h.text,
                           score=h.score))
    return out


def passages_from_documents(docs: Sequence[Any]) -> list[Passage]:
    """Numbered passages from LangChain Documents (retriever or vector store output)."""
    out: list[Passage] = []
    for d in docs:
        meta = d.metadata or {}
        doc_id = str(meta.get("doc_id") or d.id or f"passage-{len(out) + 1}")
        out.append(Passage(n=len(out) + 1, doc_id=doc_id, chunk_id=meta.get("chunk_id") or meta.get("id") or d.id, title=meta.get("title"),
                           text=d.page_content, score=meta.get("score")))
    return out


def build_messages(question: str, passages: Sequence[Passage], passage_chars: int = 700) -> list[dict[str, str]]:
    """The grounded chat prompt: numbered passages tagged with their doc id, then the question."""
    lines = []
    for p in passages:
        text = p.text if len(p.text) <= passage_chars else p.text[:passage_chars].rsplit(" ", 1)[0] + " ..."
        head = f"[{p.n}] (doc {p.doc_id})" + (f" {p.title}" if p.title else "")
        lines.append(f"{head}\n{text}")
    context = "\n\n".join(lines) if lines else "(no passages)"
    user = (f"Context:\n{context}\n\nQuestion: {question}\n\n"
            f"Answer briefly from the context and cite passages as [n]. If the context does not contain the "
            f"answer, reply exactly: {NOT_IN_CONTEXT}.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- answer analysis


def is_refusal(text: str) -> bool:
    """The model said the context does not hold the answer (or said nothing)."""
    return not text.strip() or bool(_REFUSALS.search(text))


def marker_citations(text: str, passages: Sequence[Passage]) -> list[str]:
    """Doc ids of the passages the answer cites as [n], [n, m] or [doc <id>]; unknown markers are dropped."""
    by_n = {str(p.n): p.doc_id for p in passages}
    by_doc = {p.doc_id: p.doc_id for p in passages}
    cited: list[str] = []
    for group in _MARKER.findall(text):
        for token in re.split(r"[,;\s]+", group.strip()):
            token = token.strip().removeprefix("#")
            doc = by_n.get(token) or by_doc.get(token)
            if doc and doc not in cited:
                cited.append(doc)
    for p in passages:  # "doc 4983" written without brackets
        if re.search(rf"\bdoc(?:ument)?\s+{re.escape(p.doc_id)}\b", text, re.IGNORECASE) and p.doc_id not in cited:
            cited.append(p.doc_id)
    return cited


def similarity_citation(text: str, passages: Sequence[Passage], embedder: Any, threshold: float) -> list[str]:
    """The passage the answer is closest to (cosine of normalised embeddings), if close enough."""
    if not passages or embedder is None:
        return []
    vecs = np.asarray(embedder.encode([text] + [p.text for p in passages]), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
    sims = vecs[1:] @ vecs[0]
    best = int(np.argmax(sims))
    return [passages[best].doc_id] if float(sims[best]) >= threshold else []


def clean_answer(text: str) -> str:
    """Drop the chat template's leftovers and cut the answer at a repeated-context echo."""
    text = text.strip()
    text = re.split(r"\n\s*(?:Context|Question):", text)[0].strip()
    return text


def answer_from_passages(
    question: str,
    passages: Sequence[Passage],
    llm: ChatLLM,
    *,
    config: RagConfig | None = None,
    embedder: Any = None,
    support_threshold: float = 0.5,
    explanation: dict[str, Any] | None = None,
    rewriter: bool = False,
    started: float | None = None,
) -> Answer:
    """Ask the LLM with the grounded prompt and turn its reply into an `Answer`."""
    config = config or RagConfig()
    started = started if started is not None else time.perf_counter()
    passages = list(passages)
    retrieved = [p.doc_id for p in passages]

    def done(text: str, citations: list[str], source: str, supported: bool) -> Answer:
        return Answer(question=question, text=text, citations=citations, supported=supported, retrieved=retrieved,
                      citation_source=source, passages=passages, explanation=explanation, rewriter=rewriter,
                      model=llm.name, took_ms=round((time.perf_counter() - started) * 1000, 2))

    if not passages:
        return done(f"{NOT_IN_CONTEXT}: nothing was retrieved for this question.", [], "none", False)
    reply = clean_answer(llm.complete(build_messages(question, passages, config.passage_chars),
                                      max_tokens=config.max_new_tokens))
    if is_refusal(reply):
        return done(f"{NOT_IN_CONTEXT}: the retrieved passages do not contain the answer."
                    + (f" (model: {reply})" if reply and NOT_IN_CONTEXT not in reply.upper() else ""), [], "none", False)
    cited = marker_citations(reply, passages)
    if cited:
        return done(reply, cited, "markers", True)
    cited = similarity_citation(reply, passages, embedder, support_threshold)
    if cited:
        return done(reply, cited, "similarity", True)
    return done(f"{NOT_IN_CONTEXT}: the answer could not be traced to any retrieved passage. (model: {reply})",
                [], "none", False)


def answer_from_documents(question: str, docs: Sequence[Any], llm: ChatLLM | None = None, **kwargs: Any) -> Answer:
    """`answer_from_passages` for LangChain Documents (the last step of an LCEL chain)."""
    if llm is None:
        llm = LocalLLM()
    if kwargs.get("embedder") is None:
        from latentsearch.models.factory import get_embedder

        kwargs["embedder"] = get_embedder()
    explanation = next((d.metadata.get("explanation") for d in docs if d.metadata.get("explanation")), None)
    return answer_from_passages(question, passages_from_documents(docs), llm,
                                explanation=kwargs.pop("explanation", explanation), **kwargs)


def ask(
    question: str,
    settings: Settings,
    *,
    retriever: Any = None,
    llm: ChatLLM | None = None,
    k: int | None = None,
    strictness: str | int = "auto",
    search_type: str = "dense",
    filter: dict[str, Any] | None = None,
    rewrite: bool = True,
    fusion: str | None = None,
    weights: tuple[float, float] | list[float] | None = None,
) -> Answer:
    """Retrieve (the `Retriever`'s search-or-rewriter decision), then answer with citations.
    `latentsearch ask` calls this; `retriever` defaults to `Retriever.from_settings(settings)`.
    `fusion`/`weights`: how hybrid fuses BM25 and k-NN, as in `Retriever.search`."""
    from latentsearch.query.retrieval import Retriever

    if not question.strip():
        raise ValueError("the question is empty")
    started = time.perf_counter()
    retriever = retriever or Retriever.from_settings(settings)
    result = retriever.search(question, k=k or settings.rag.k, mode=search_type, strictness=strictness,  # type: ignore[arg-type]
                              filter=filter, rewrite=rewrite, fusion=fusion, weights=weights)  # type: ignore[arg-type]
    return answer_from_passages(question, passages_from_hits(result.hits), llm or llm_from_settings(settings),
                                config=settings.rag, embedder=retriever.embedder, explanation=result.explanation,
                                rewriter=result.rewritten, started=started)
