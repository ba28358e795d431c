"""Choose the vocabulary threshold by looking at real clusters: for each threshold, forms -> concepts per
latent type and the multi-form concepts (what merged), plus build time. Nothing is written.

    python benchmarks/vocabulary.py --index scifact-600 --thresholds 0.8,0.85,0.9
    python benchmarks/vocabulary.py --values values.json          # {type: {raw value: chunks}}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from latentsearch.backends import open_backend
from latentsearch.config import load_settings
from latentsearch.ingest.vocabulary import build_vocabulary, index_values
from latentsearch.models.factory import get_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--index", help="Read latent.<type> values from this index (configured backend)")
    src.add_argument("--values", type=Path, help="A JSON file {type: {raw value: count}}")
    parser.add_argument("--thresholds", default="0.8,0.85,0.9")
    parser.add_argument("--show", type=int, default=15, help="Multi-form concepts listed per type and threshold")
    args = parser.parse_args()

    if args.index:
        settings = load_settings(index=args.index)
        values = index_values(open_backend(settings.backend), args.index)
    else:
        values = json.loads(args.values.read_text(encoding="utf-8"))
    embedder = get_embedder()
    console = Console()
    summary = Table(title="forms -> concepts")
    for col in ("threshold", "type", "forms", "concepts", "multi-form concepts", "build s"):
        summary.add_column(col)
    for thr in (float(t) for t in args.thresholds.split(",")):
        t0 = time.perf_counter()
        vocab = build_vocabulary(values, embedder, threshold=thr)
        seconds = time.perf_counter() - t0
        for etype, concepts in vocab.concepts.items():
            multi = [c for c in concepts if len(c.aliases) > 1]
            summary.add_row(f"{thr:g}", etype, str(len(values.get(etype, {}))), str(len(concepts)), str(len(multi)),
                            f"{seconds:.2f}")
            table = Table(title=f"threshold {thr:g} · {etype}: merged concepts (top {args.show} by count)")
            for col in ("concept", "chunks", "other forms"):
                table.add_column(col)
            for c in multi[: args.show]:
                table.add_row(c.name, str(c.count), ", ".join(f for f in c.aliases if f != c.name))
            console.print(table)
    console.print(summary)


if __name__ == "__main__":
    main()
