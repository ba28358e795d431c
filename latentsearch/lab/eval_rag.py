"""RAG evaluation: does the answer cite a document the qrels call relevant? Dense-only retrieval vs
the query rewriter, same LLM, same prompt.

Metrics per variant (over the same questions):
- support_rate: answers that cite at least one relevant document (the issue's "answer support rate");
- grounded_rate: answers the pipeline reports as supported (any citation, relevant or not);
- citation_precision: relevant citations / all citations;
- context_hit_rate: questions whose retrieved passages include a relevant document (the ceiling);
- not_in_context_rate: answers that said the context does not hold the answer.
Identical contexts give identical greedy answers, so an answer is computed once per (question, context).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from latentsearch.protocols import ChatLLM
from latentsearch.query.rag import Answer, answer_from_passages, passages_from_hits
from latentsearch.query.retrieval import Retriever


class RagRow(BaseModel):
    query_id: str
    variant: str
    relevant: list[str]
    retrieved: list[str]
    citations: list[str]
    supported: bool
    cites_relevant: bool
    citation_source: str
    answer: str
    seconds: float


class RagVariantResult(BaseModel):
    variant: str
    questions: int
    support_rate: float
    grounded_rate: float
    citation_precision: float | None
    context_hit_rate: float
    not_in_context_rate: float
    mean_seconds: float
    latent_filtered: int = Field(0, description="Questions where the rewriter applied a latent filter")


class RagEvalReport(BaseModel):
    """`latentsearch eval rag --json` prints this."""

    index: str
    model: str
    k: int
    strictness: str
    queries_path: str
    questions: int
    results: list[RagVariantResult]
    rows: list[RagRow] = Field(default_factory=list)
    seconds: float


def load_judged_queries(queries: Path, qrels: Path | None, limit: int | None) -> list[tuple[str, str, list[str]]]:
    """(id, text, relevant doc ids) for judged queries, in file order. Relevance comes from a BEIR qrels
    TSV, or from a `relevant` list in each query line (the bundled sample queries)."""
    judged: dict[str, list[str]] = {}
    if qrels is not None:
        with qrels.open(encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t"):
                if len(row) < 2 or row[0] in ("query-id", "query_id"):
                    continue
                if len(row) < 3 or float(row[2]) > 0:
                    judged.setdefault(row[0], []).append(row[1])
    out: list[tuple[str, str, list[str]]] = []
    with queries.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            qid = str(q.get("_id", q.get("id")))
            relevant = judged.get(qid) if qrels is not None else [str(r) for r in q.get("relevant", [])]
            if relevant:
                out.append((qid, q["text"], relevant))
            if limit and len(out) >= limit:
                break
    if not out:
        raise ValueError(f"no judged queries in {queries}" + (f" with {qrels}" if qrels else
                                                                 " (pass --qrels or give each query `relevant`)"))
    return out


def evaluate_rag(
    *,
    retriever: Retriever,
    llm: ChatLLM,
    queries: list[tuple[str, str, list[str]]],
    variants: tuple[str, ...] = ("dense", "rewriter"),
    k: int = 4,
    strictness: str = "auto",
    config: Any = None,
    queries_path: str = "",
    progress: Callable[[str], None] | None = None,
    on_row: Callable[[RagRow], None] | None = None,
) -> RagEvalReport:
    """Answer every judged query from each variant's retrieval; `on_row` sees each row as it is made
    (a long CPU run keeps its partial results)."""
    started = time.perf_counter()
    memo: dict[tuple[str, tuple[str, ...]], Answer] = {}
    rows: list[RagRow] = []
    filtered: dict[str, int] = {v: 0 for v in variants}
    for n, (qid, text, relevant) in enumerate(queries, start=1):
        for variant in variants:
            if variant not in ("dense", "rewriter"):
                raise ValueError(f"unknown variant {variant!r}; use dense and/or rewriter")
            t0 = time.perf_counter()
            result = retriever.search(text, k=k, strictness=strictness, rewrite=variant == "rewriter")
            if result.explanation and result.explanation.get("chosen_msm") is not None:
                filtered[variant] += 1
            passages = passages_from_hits(result.hits)
            key = (text, tuple(p.chunk_id or p.doc_id for p in passages))
            if key not in memo:
                memo[key] = answer_from_passages(text, passages, llm, config=config, embedder=retriever.embedder)
            ans = memo[key]
            rel = set(relevant)
            row = RagRow(query_id=qid, variant=variant, relevant=relevant, retrieved=ans.retrieved,
                         citations=ans.citations, supported=ans.supported,
                         cites_relevant=bool(rel & set(ans.citations)), citation_source=ans.citation_source,
                         answer=ans.text, seconds=round(time.perf_counter() - t0, 3))
            rows.append(row)
            if on_row:
                on_row(row)
        if progress:
            progress(f"{n}/{len(queries)} questions")
    results = []
    for variant in variants:
        vr = [r for r in rows if r.variant == variant]
        cited = sum(len(r.citations) for r in vr)
        rel_cited = sum(len(set(r.citations) & set(r.relevant)) for r in vr)
        results.append(RagVariantResult(
            variant=variant,
            questions=len(vr),
            support_rate=round(sum(r.cites_relevant for r in vr) / len(vr), 4),
            grounded_rate=round(sum(r.supported for r in vr) / len(vr), 4),
            citation_precision=round(rel_cited / cited, 4) if cited else None,
            context_hit_rate=round(sum(bool(set(r.retrieved) & set(r.relevant)) for r in vr) / len(vr), 4),
            not_in_context_rate=round(sum(not r.supported for r in vr) / len(vr), 4),
            mean_seconds=round(sum(r.seconds for r in vr) / len(vr), 3),
            latent_filtered=filtered[variant],
        ))
    return RagEvalReport(index=retriever.index, model=llm.name, k=k, strictness=str(strictness), queries_path=queries_path,
                         questions=len(queries), results=results, rows=rows,
                         seconds=round(time.perf_counter() - started, 2))
