"""Does the latent signal pay for itself? Every use of it against the best plain ranking, cross-validated.

Collects one snapshot of an index with latent types (exact dense scores, engine BM25, the question's values from
three sources: free extraction, LLM-chosen index values, top-document frequency) and evaluates a grid of
policies (filter / boost / weighted-RRF latent list / BM25 expansion) on it; the best policy per fold is
fitted on the other folds (5-fold CV over the queries) and scored held-out. Prints a table and writes JSON.

    latentsearch ingest ../shared/data/scifact/corpus.jsonl --index scifact-full \
        --config benchmarks/scifact-latent.toml          # latent types from titles
    .venv/bin/python benchmarks/latent_value.py --index scifact-full \
        --queries ../shared/data/scifact/queries.train.jsonl --qrels ../shared/data/scifact/qrels/train.tsv \
        --out benchmarks/results/latent-value-scifact-train

`--reuse` evaluates a saved snapshot again without collecting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def grid(types: list[str]) -> dict[str, list]:
    from latentsearch.lab.latent_study import Policy

    type_sets = [None] + [[t] for t in types] if len(types) > 1 else [None]
    sources = ("free", "chosen", "chosen+docs", "prf")
    g: dict[str, list[Policy]] = {
        "filter": [Policy(method="filter", source=s, types=ts, msm=m, min_confidence=c, top_values=v)
                   for s, ts, m, c, v in itertools.product(sources, type_sets, (1, 2), (0.0, 0.3, 0.6), (1, 2))],
        "boost": [Policy(method="boost", source=s, types=ts, boost=b, min_confidence=c, top_values=v)
                  for s, ts, b, c, v in itertools.product(sources, type_sets, (0.002, 0.005, 0.01, 0.02),
                                                          (0.0, 0.3, 0.6), (1, 2))],
        "rrf3": [Policy(method="rrf3", source=s, types=ts, weight=w, min_confidence=c, top_values=v)
                 for s, ts, w, c, v in itertools.product(sources, type_sets, (0.25, 0.5, 1.0), (0.0, 0.3, 0.6),
                                                         (1, 2))],
        "expand": [Policy(method="expand", source=s) for s in ("free", "chosen", "chosen+docs")],
    }
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=Path)
    ap.add_argument("--qrels", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for the snapshot; <out>.json gets the table")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--reuse", action="store_true", help="evaluate the saved snapshot in --out")
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--no-vocabulary", action="store_true", help="raw (normalised) values even where the index has a "
                    "stored value vocabulary: the vocabulary-off arm of the ablation")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from latentsearch.lab.latent_study import Evaluator, Policy, collect, cross_validate, load_study

    if args.reuse:
        study = load_study(args.out)
    else:
        from latentsearch.backends import open_backend
        from latentsearch.config import load_settings
        from latentsearch.lab.eval_retrieval import load_qrels, load_queries
        from latentsearch.mappings import schema_from_mapping
        from latentsearch.models.factory import get_embedder, get_extractor

        settings = load_settings()
        backend = open_backend(settings.backend)
        schema = schema_from_mapping(backend.get_mapping(args.index))
        if schema is None or not schema.latent_types:
            raise SystemExit(f"index {args.index} has no latent types")
        qrels = load_qrels(args.qrels)
        queries = load_queries(args.queries, limit=args.limit, with_qrels=set(qrels))
        study = collect(backend, args.index, get_embedder(), get_extractor(adapter=args.adapter), queries, qrels,
                        args.out, types=schema.type_names,
                        query_text_type=schema.query_text_type or schema.text_type,
                        vocabulary=not args.no_vocabulary)
    ev = Evaluator(study)
    console = Console(stderr=True, width=220)
    rows: list[dict] = []
    for base in ("bm25", "dense", "hybrid"):
        rows.append({"variant": base, "fit": "-", **ev.metrics(Policy(base=base))})
    g = grid(study.types)
    # per method: the best setting on ALL queries (optimistic, shows the ceiling) and the cross-validated figure
    for method, policies in g.items():
        scored = sorted(((ev.metrics(p)["ndcg@10"], i) for i, p in enumerate(policies)), reverse=True)
        best = policies[scored[0][1]]
        rows.append({"variant": f"{method} (best on all queries)", "fit": best.label(), **ev.metrics(best)})
        cv = cross_validate(ev, policies)
        rows.append({"variant": f"{method} (5-fold CV)", "fit": "; ".join(sorted(set(cv["chosen"])))[:200],
                     **cv["held_out"]})
    every = [p for ps in g.values() for p in ps] + [Policy()]
    cv = cross_validate(ev, every)
    rows.append({"variant": "any policy (5-fold CV)", "fit": "; ".join(sorted(set(cv["chosen"])))[:300],
                 **cv["held_out"]})
    for source in ("free", "chosen", "chosen+docs", "prf"):  # ablation: the filter's reach per question-value source
        p = Policy(method="filter", source=source, msm=1)
        rows.append({"variant": f"filter msm=1, {source} values (ablation)", "fit": p.label(), **ev.metrics(p)})
    table = Table(title=f"latent value on {study.index}: {len(study.qids)} queries, {len(study.doc_ids)} documents")
    for col in ("variant", "nDCG@10", "R@100", "P@10", "R@10", "F1@10", "fired", "rel. kept"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["variant"], f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}", f"{r['p@10']:.4f}",
                      f"{r['r@10']:.4f}", f"{r['f1@10']:.4f}", f"{r['fired']:.2f}", f"{r['relevant_kept']:.2f}")
    console.print(table)
    Path(f"{args.out}.json").write_text(json.dumps({"index": study.index, "queries": len(study.qids),
                                                    "documents": len(study.doc_ids), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
