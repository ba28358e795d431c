"""Retrieval evaluation on BEIR-layout data: every search variant, document-level metrics, latency,
and why the latent filter helped or hurt (per-level hit counts, filter recall of relevant documents).

    latentsearch eval retrieval --index scifact-latent --queries queries.jsonl --qrels qrels/train.tsv --json
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from latentsearch import dsl
from latentsearch.backends import SearchBackend
from latentsearch.progress import track
from latentsearch.query.rewriter import QueryRewriter, RewrittenSearch, latent_filter
from latentsearch.query.search import search

VARIANTS = ("bm25", "dense", "hybrid", "dense+latent:auto", "dense+latent:strict", "hybrid+latent:auto")
METRICS = {"ndcg@10": "ndcg@10", "p@10": "precision@10", "r@10": "recall@10", "f1@10": "f1@10",
           "recall@100": "recall@100", "mrr@10": "mrr@10"}


class VariantResult(BaseModel):
    variant: str
    metrics: dict[str, float]
    latency_ms: dict[str, float] = Field(description="p50 / p95 per query, end to end")


class FilterDiagnostics(BaseModel):
    """How the latent filter behaved on the queries of one latent variant."""

    variant: str
    queries: int
    filtered_share: float = Field(description="Share of queries where a latent filter was applied")
    chosen_levels: dict[str, int] = Field(description="How often each msm level (or 'none') was chosen")
    mean_entities: float = Field(description="Mapped entities per query")
    relevant_kept: float | None = Field(
        None, description="Among filtered queries: share of their relevant documents that pass the chosen filter"
    )
    relevant_in_top10_filtered: float | None = Field(
        None, description="Among filtered queries: share of relevant docs ranked in the top 10"
    )


class RetrievalReport(BaseModel):
    index: str
    queries: int
    k: int
    results: list[VariantResult]
    diagnostics: list[FilterDiagnostics] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)


def load_queries(path: Path, limit: int | None = None, with_qrels: set[str] | None = None) -> dict[str, str]:
    """BEIR queries JSONL ({"_id", "text"}), optionally only those that have judgements."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid, text = str(row["_id"]), str(row["text"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path}:{n}: a query needs `_id` and `text` ({exc})") from exc
            if with_qrels is not None and qid not in with_qrels:
                continue
            out[qid] = text
            if limit and len(out) >= limit:
                break
    return out


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (query-id, corpus-id, score; header optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """ranx metrics (document level) for one run."""
    try:
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate
    except ImportError as exc:  # pragma: no cover - install hint
        raise RuntimeError("retrieval metrics need ranx: pip install 'latentsearch[ml]'") from exc
    judged = {q: d for q, d in qrels.items() if q in run}
    scores = ranx_evaluate(Qrels(judged), Run({q: run[q] or {"__none__": 0.0} for q in judged}), list(METRICS.values()))
    return {name: round(float(scores[m]), 4) for name, m in METRICS.items()}


def write_trec(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for qid, docs in run.items():
            for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), 1):
                fh.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")


def _ranked(hits: list[Any]) -> dict[str, float]:
    """Document-level run: rank-decreasing pseudo-scores keep the engine's order (backfilled lists
    are not monotone in raw score)."""
    out: dict[str, float] = {}
    for rank, h in enumerate(hits):
        out.setdefault(h.doc_id, float(len(hits) - rank))
    return out


def relevant_kept(backend: SearchBackend, index: str, found: RewrittenSearch, relevant: list[str]) -> int | None:
    """How many relevant documents pass the chosen latent filter (None when no filter was applied)."""
    ex = found.explanation
    if ex.chosen_msm is None or not relevant:
        return None
    flt = latent_filter(ex.entities, ex.chosen_msm)
    body = {"size": 0, "query": dsl.bool_query(filter=[dsl.terms("doc_id", relevant), flt]),
            "aggs": {"docs": {"terms": {"field": "doc_id", "size": len(relevant)}}}}
    return len(backend.search(index, body)["aggregations"]["docs"]["buckets"])


def run_variant(
    variant: str,
    queries: dict[str, str],
    *,
    backend: SearchBackend,
    index: str,
    embedder,
    rewriter: QueryRewriter | None,
    k: int = 100,
    qrels: dict[str, dict[str, int]] | None = None,
    rewrite_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[dict[str, dict[str, float]], list[float], FilterDiagnostics | None]:
    """One variant over all queries -> (run, per-query latency ms, filter diagnostics)."""
    base, _, strictness = variant.partition("+latent:")
    if base not in ("bm25", "dense", "hybrid"):
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if strictness and rewriter is None:
        raise ValueError(f"variant {variant} needs an index with latent types and an extractor")
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    levels: Counter[str] = Counter()
    entities, kept, kept_of, top10, top10_of = [], 0, 0, 0, 0
    for qid, text in track(list(queries.items()), variant, enabled=progress):
        t0 = time.perf_counter()
        if strictness:
            found = rewriter.search(text, k=k, mode=base, strictness=strictness, **(rewrite_options or {}))
            hits = found.hits
        else:
            found = None
            hits = search(text, backend=backend, index=index, embedder=embedder, k=k, mode=base).hits  # type: ignore[arg-type]
        latencies.append((time.perf_counter() - t0) * 1000)
        run[qid] = _ranked(hits)
        if found is not None:
            ex = found.explanation
            levels["none" if ex.chosen_msm is None else str(ex.chosen_msm)] += 1
            entities.append(len(ex.entities))
            rel = [d for d, s in (qrels or {}).get(qid, {}).items() if s > 0]
            n_kept = relevant_kept(backend, index, found, rel)
            if n_kept is not None:
                kept, kept_of = kept + n_kept, kept_of + len(rel)
                top = [h.doc_id for h in hits[:10]]
                top10, top10_of = top10 + sum(1 for d in rel if d in top), top10_of + len(rel)
    diag = None
    if strictness:
        n = max(len(queries), 1)
        diag = FilterDiagnostics(
            variant=variant, queries=len(queries), filtered_share=round(1 - levels["none"] / n, 4),
            chosen_levels=dict(levels), mean_entities=round(float(np.mean(entities)) if entities else 0.0, 3),
            relevant_kept=round(kept / kept_of, 4) if kept_of else None,
            relevant_in_top10_filtered=round(top10 / top10_of, 4) if top10_of else None,
        )
    return run, latencies, diag


def evaluate_retrieval(
    *,
    backend: SearchBackend,
    index: str,
    embedder,
    extractor,
    queries_path: Path,
    qrels_path: Path,
    variants: tuple[str, ...] = VARIANTS,
    limit: int | None = None,
    k: int = 100,
    run_dir: Path | None = None,
    rewrite_options: dict[str, Any] | None = None,
    progress: bool = True,
    on_variant: Callable[[VariantResult], None] | None = None,
    store=None,
) -> RetrievalReport:
    qrels = load_qrels(qrels_path)
    queries = load_queries(queries_path, limit=limit, with_qrels=set(qrels))
    if not queries:
        raise ValueError(f"no query in {queries_path} has judgements in {qrels_path}")
    needs_latent = any("+latent:" in v for v in variants)
    rewriter = QueryRewriter(backend, index, embedder, extractor, store=store) if needs_latent else None
    if rewriter is not None and not rewriter.schema.latent_types:
        raise ValueError(f"index `{index}` has no latent entity types: ingest with --latent-types, or drop the "
                         "+latent variants (--variants bm25,dense,hybrid)")
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
    results, diagnostics = [], []
    for variant in variants:
        run, lat, diag = run_variant(variant, queries, backend=backend, index=index, embedder=embedder,
                                     rewriter=rewriter, k=k, qrels=qrels, rewrite_options=rewrite_options,
                                     progress=progress)
        if run_dir:
            write_trec(run_dir / f"{variant.replace(':', '_').replace('+', '_')}.trec", run, variant)
        result = VariantResult(
            variant=variant, metrics=evaluate_run(qrels, run),
            latency_ms={"p50": round(float(np.percentile(lat, 50)), 2), "p95": round(float(np.percentile(lat, 95)), 2)},
        )
        results.append(result)
        if diag:
            diagnostics.append(diag)
        if on_variant:
            on_variant(result)
    return RetrievalReport(index=index, queries=len(queries), k=k, results=results, diagnostics=diagnostics,
                           options=rewrite_options or {})


class SubsetReport(BaseModel):
    out: str
    queries: int
    documents: int
    relevant_documents: int


def beir_subset(
    folder: Path, out: Path, *, queries: int = 150, documents: int = 600, split: str = "train", seed: int = 13
) -> SubsetReport:
    """A smaller BEIR set that keeps the task honest: the first `queries` judged queries, every
    document they judge relevant, and distractors (a seeded sample of the rest) up to `documents`.
    For CPU budgets where enriching a whole corpus with an LLM is out of reach."""
    import random

    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = next((p for p in (folder / f"queries.{split}.jsonl", folder / "queries.jsonl") if p.exists()), None)
    if not qrels_path.exists() or queries_path is None:
        raise FileNotFoundError(f"{folder} is not a BEIR folder with qrels/{split}.tsv and queries(.{split}).jsonl")
    qrels = load_qrels(qrels_path)
    chosen = load_queries(queries_path, limit=queries, with_qrels=set(qrels))
    relevant = {d for q in chosen for d, s in qrels[q].items() if s > 0}
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    others = [r for r in rows if str(r["_id"]) not in relevant]
    random.Random(seed).shuffle(others)
    keep = relevant | {str(r["_id"]) for r in others[: max(documents - len(relevant), 0)]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:  # corpus order, so a subset ingest reuses cached work on the full corpus
            if str(r["_id"]) in keep:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in chosen.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid in chosen:
            for doc, score in qrels[qid].items():
                fh.write(f"{qid}\t{doc}\t{score}\n")
    return SubsetReport(out=str(out), queries=len(chosen), documents=len(keep), relevant_documents=len(relevant))
