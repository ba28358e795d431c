"""End-to-end `search` latency with the query rewriter: p50/p95 over N questions, split into embed /
extract / backend time, with the extraction cache cold (first pass) and warm (second pass, same
process). Baseline in the same process: plain dense search (no rewriting).

    LATENTSEARCH_HOME=... python benchmarks/query.py --index scifact-600 \
        --queries ../shared/data/scifact/queries.train.jsonl --limit 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from latentsearch.backends import open_backend
from latentsearch.config import Settings
from latentsearch.lab.eval_retrieval import load_queries
from latentsearch.models.factory import extractor_from_settings, get_embedder
from latentsearch.query.rewriter import QueryRewriter
from latentsearch.query.search import search


def pct(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="Save the table as JSON")
    ap.add_argument("--entities", default="free,chosen", help="question-entity modes to time (RewriteOptions.entities)")
    ap.add_argument("--bf16", choices=("off", "questions"), default=None,
                    help="the question extractor's precision (default: the config's models.extractor_bf16, "
                         "'questions': packed bfloat16 where the CPU has bf16 matmuls)")
    ap.add_argument("--options", default="{}", help="further RewriteOptions as JSON, e.g. '{\"min_confidence\": 0.5}'")
    args = ap.parse_args()

    settings = Settings(index=args.index)
    models = settings.models if args.bf16 is None else settings.models.model_copy(update={"extractor_bf16": args.bf16})
    backend = open_backend(settings.backend)
    embedder = get_embedder(settings.models.embedder)
    extractor = extractor_from_settings(models, questions=True)
    print(f"question extractor: {extractor.fingerprint}")
    rewriter = QueryRewriter(backend, args.index, embedder, extractor)
    questions = list(load_queries(args.queries, limit=args.limit).values())
    rewriter.search(questions[0], k=args.k)  # warm-up: models and vocabulary loaded, not measured
    rewriter._cache.clear()

    rows: dict[str, dict[str, tuple[float, float]]] = {}
    plain = []
    for q in questions:
        t0 = time.perf_counter()
        search(q, backend=backend, index=args.index, embedder=embedder, k=args.k)
        plain.append((time.perf_counter() - t0) * 1000)
    rows["dense, no rewriting"] = {"total": pct(plain)}
    extra = json.loads(args.options)
    for mode, phase in [(m, p) for m in args.entities.split(",") for p in ("cold cache", "warm cache")]:
        if phase == "cold cache":
            rewriter._cache.clear()
        parts: dict[str, list[float]] = {"embed": [], "extract": [], "backend": [], "total": []}
        for q in questions:
            t0 = time.perf_counter()
            found = rewriter.search(q, k=args.k, entities=mode, **extra)
            parts["total"].append((time.perf_counter() - t0) * 1000)
            for key in ("embed", "extract", "backend"):
                parts[key].append(found.explanation.timings_ms.get(key, 0.0))
        rows[f"rewriter auto, entities={mode}, {phase}"] = {k: pct(v) for k, v in parts.items()}

    table = Table(title=f"search latency on `{args.index}`, {len(questions)} questions (ms, p50 / p95)")
    for c in ("path", "embed", "extract", "backend", "total"):
        table.add_column(c, justify="left" if c == "path" else "right")
    for name, parts in rows.items():
        table.add_row(name, *(f"{parts[c][0]:.1f} / {parts[c][1]:.1f}" if c in parts else "-"
                              for c in ("embed", "extract", "backend", "total")))
    Console().print(table)
    base = rows["dense, no rewriting"]["total"][0]
    for name, parts in rows.items():
        print(f"{name}: p50 total / plain dense p50 = {parts['total'][0] / base:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"index": args.index, "questions": len(questions), "extractor": extractor.fingerprint,
                                        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
