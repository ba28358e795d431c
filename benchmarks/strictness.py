"""Strictness study: how P@10, R@10 and Recall@100 move with the latent filter's strictness.

Rows: dense (no filter); `tier` promotion (filtered documents above the floor first) with auto
strictness at min_hits in {1, 2, 5, 10, 20}, fixed msm 1, 2, 3 and strict; `boost` promotion (a
score bonus for filtered documents) at several sizes with auto and loose strictness.
Prints a table, saves it as JSON and a PNG plot. The question's entities are extracted once per query
(the rewriter's cache), so every row sees the same entities.

    LATENTSEARCH_HOME=... python benchmarks/strictness.py --index scifact-600 \
        --queries scifact-600/queries.jsonl --qrels scifact-600/qrels/test.tsv --out benchmarks/results/strictness
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from latentsearch.backends import open_backend
from latentsearch.cache import ContentCache
from latentsearch.config import Settings
from latentsearch.lab.eval_retrieval import evaluate_run, load_qrels, load_queries, run_variant
from latentsearch.models.factory import get_embedder, get_extractor
from latentsearch.query.rewriter import QueryRewriter

ROWS: list[tuple[str, str, dict]] = [
    ("dense (no filter)", "dense", {}),
    *[(f"tier, auto min_hits={m}", "dense+latent:auto", {"min_hits": m, "promotion": "tier"}) for m in (1, 2, 5, 10, 20)],
    *[(f"tier, fixed msm={m}", f"dense+latent:{m}", {"promotion": "tier"}) for m in (1, 2, 3)],
    ("tier, strict", "dense+latent:strict", {"promotion": "tier"}),
    *[(f"auto, boost {b}", "dense+latent:auto", {"promotion": "boost", "boost": b}) for b in (0.005, 0.01, 0.02, 0.04)],
    *[(f"loose, boost {b}", "dense+latent:loose", {"promotion": "boost", "boost": b}) for b in (0.005, 0.01, 0.02)],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--qrels", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/strictness"))
    args = ap.parse_args()

    settings = Settings(index=args.index)
    backend = open_backend(settings.backend)
    embedder = get_embedder(settings.models.embedder)
    store = ContentCache(settings.cache_dir / "processors.sqlite")  # question extractions computed once
    rewriter = QueryRewriter(backend, args.index, embedder, get_extractor(), store=store)
    qrels = load_qrels(args.qrels)
    queries = load_queries(args.queries, limit=args.limit, with_qrels=set(qrels))

    rows = []
    for label, variant, opts in ROWS:
        run, _, diag = run_variant(variant, queries, backend=backend, index=args.index, embedder=embedder,
                                   rewriter=rewriter, k=100, qrels=qrels, rewrite_options=opts, progress=False)
        m = evaluate_run(qrels, run)
        rows.append({"setting": label, **m, "filtered_share": diag.filtered_share if diag else 0.0,
                     "relevant_kept": diag.relevant_kept if diag else None})
        print(f"{label}: {m}", flush=True)

    table = Table(title=f"strictness study on `{args.index}` ({len(queries)} queries)")
    cols = ["setting", "p@10", "r@10", "recall@100", "ndcg@10", "filtered_share", "relevant_kept"]
    for c in cols:
        table.add_column(c, justify="left" if c == "setting" else "right")
    for r in rows:
        table.add_row(*(str(r[c]) if not isinstance(r[c], float) else f"{r[c]:.4f}" for c in cols))
    Console().print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"index": args.index, "queries": len(queries), "rows": rows},
                                                        indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = range(len(rows))
    for metric in ("p@10", "r@10", "recall@100", "ndcg@10"):
        ax.plot(x, [r[metric] for r in rows], marker="o", label=metric)
    ax.set_xticks(list(x), [r["setting"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("score")
    ax.set_title(f"latent filter strictness on {args.index} ({len(queries)} queries)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"saved {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
