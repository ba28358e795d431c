"""Fit hybrid fusion on SciFact train claims: RRF (rank constants) and min-max with weights (issue 15).

For each claim the engine returns the two lists a `hybrid` query fuses (BM25 on `content` and k-NN
on `vector`, each its top `--depth` chunks, as the search pipeline sees them); the fusion is then
replayed exactly as the embedded engine's hybrid does (min-max with a 0.001 floor and the weighted
mean over the lists a chunk is in, or RRF 1/(c + rank)), chunks collapse to documents, and ranx
scores the runs. The winner becomes `query.search.DEFAULT_FUSION` / `DEFAULT_WEIGHTS`; confirm it
end to end with `latentsearch eval retrieval --variants bm25,dense,hybrid`.

    LATENTSEARCH_HOME=... python benchmarks/fusion_fit.py --index scifact \
        --queries ../shared/data/scifact/queries.train.jsonl --qrels ../shared/data/scifact/qrels/train.tsv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from latentsearch import dsl
from latentsearch.backends import open_backend
from latentsearch.config import Settings
from latentsearch.lab.eval_retrieval import evaluate_run, load_qrels, load_queries
from latentsearch.models.factory import get_embedder
from latentsearch.query.search import lexical_query


def fetch(backend, index: str, query: dict, depth: int) -> list[tuple[str, float]]:
    body = {"size": depth, "query": query, "_source": ["doc_id"]}
    return [(h["_source"]["doc_id"], float(h["_score"])) for h in backend.search(index, body)["hits"]["hits"]]


def fuse(lists: list[list[tuple[str, float]]], technique: str, weights: list[float], rank_constant: int,
         k: int) -> dict[str, float]:
    """One query's document run from chunk lists (chunk identity: position in its own list + doc)."""
    scores: dict[tuple[int, int], list[float]] = {}
    chunk_doc: dict[tuple[int, int], str] = {}
    # a chunk appears in both lists under the same (doc, chunk) identity: key by (doc, rank-free id)
    for li, items in enumerate(lists):
        if not items:
            continue
        s = np.asarray([x[1] for x in items])
        if technique == "rrf":
            norm = 1.0 / (rank_constant + np.arange(1, len(items) + 1))
        else:
            lo, hi = s.min(), s.max()
            norm = np.maximum((s - lo) / (hi - lo), 0.001) if hi > lo else np.ones_like(s)
        for (cid, _), v in zip(items, norm):
            scores.setdefault(cid, [None] * len(lists))[li] = float(v)  # type: ignore[index]
            chunk_doc[cid] = cid[0] if isinstance(cid, tuple) else cid
    fused: dict[str, float] = {}
    for cid, vals in scores.items():
        if technique == "rrf":
            f = sum(v for v in vals if v is not None)
        else:
            w = sum(weights[i] for i, v in enumerate(vals) if v is not None)
            f = sum(weights[i] * v for i, v in enumerate(vals) if v is not None) / w if w else 0.0
        doc = chunk_doc[cid]
        if f > fused.get(doc, -1.0):
            fused[doc] = f
    top = sorted(fused.items(), key=lambda x: -x[1])[:k]
    return dict(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--qrels", type=Path, required=True)
    ap.add_argument("--depth", type=int, default=100, help="Chunks per sub-query (hybrid's from+size)")
    ap.add_argument("--k", type=int, default=100, help="Documents per run")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fusion-fit-scifact-train.json"))
    args = ap.parse_args()
    console = Console()
    settings = Settings(index=args.index)
    backend = open_backend(settings.backend)
    embedder = get_embedder(settings.models.embedder)
    qrels = load_qrels(args.qrels)
    queries = load_queries(args.queries, with_qrels=set(qrels))
    t0 = time.time()
    vectors = embedder.encode(list(queries.values()))
    lists: dict[str, list[list[tuple[tuple[str, str], float]]]] = {}
    for (qid, text), vec in zip(queries.items(), vectors):
        pair = []
        for q in (lexical_query(text), dsl.knn("vector", vec.tolist(), k=args.depth)):
            body = {"size": args.depth, "query": q, "_source": ["doc_id"]}
            hits = backend.search(args.index, body)["hits"]["hits"]
            pair.append([((h["_source"]["doc_id"], h["_id"]), float(h["_score"])) for h in hits])
        lists[qid] = pair
    console.print(f"{len(queries)} queries: lists fetched in {time.time() - t0:.0f} s")

    def run_for(technique: str, weights: list[float], c: int = 60) -> dict[str, float]:
        run = {q: fuse(ls, technique, weights, c, args.k) for q, ls in lists.items()}
        return evaluate_run(qrels, run)

    rows = []
    for name, ls_index in (("bm25 alone", 0), ("dense alone", 1)):
        run = {}
        for q, ls in lists.items():
            best: dict[str, float] = {}
            for (doc, _), s in ls[ls_index]:
                best.setdefault(doc, s)
            run[q] = best
        m = evaluate_run(qrels, run)
        rows.append({"fusion": name, "weights": None, "rank_constant": None, **m})
    for c in (10, 20, 40, 60, 100):
        rows.append({"fusion": "rrf", "weights": None, "rank_constant": c, **run_for("rrf", [1, 1], c)})
    for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        rows.append({"fusion": "min_max", "weights": [w, round(1 - w, 2)], "rank_constant": None,
                     **run_for("min_max", [w, 1 - w])})
    table = Table(title=f"hybrid fusion on {args.index}: {len(queries)} queries (chunks fused, then collapsed)")
    for col in ("fusion", "weights (bm25, knn)", "rank c", "nDCG@10", "Recall@100"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["fusion"], str(r["weights"] or ""), str(r["rank_constant"] or ""), f"{r['ndcg@10']:.4f}",
                      f"{r['recall@100']:.4f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"index": args.index, "queries": len(queries), "depth": args.depth,
                                    "rows": rows}, indent=2) + "\n")
    console.print(f"saved {args.out}")


if __name__ == "__main__":
    main()
