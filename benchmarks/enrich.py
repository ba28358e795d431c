"""Latent-entity enrichment benchmark: batched generation vs one chunk at a time.

Chunks SciFact abstracts like ingest does, then extracts the BioASQ entity set the LentEx paper
uses (disease, drug, symptom, treatment, anatomical term, biomarker) with text_type "biomedical
abstract", once with the extractor's batching and once with batch size 1, in one process.

    .venv/bin/python benchmarks/enrich.py                # 500 abstracts (long on 2 CPU cores)
    .venv/bin/python benchmarks/enrich.py --limit 40     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
TYPES = ["disease", "drug", "symptom", "treatment", "anatomical term", "biomarker"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--single-limit", type=int, default=None,
                        help="chunks for the one-at-a-time run (default: all; it is the slow one)")
    parser.add_argument("--adapter", default="default")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
    from latentsearch.ingest.readers import read_records
    from latentsearch.ingest.records import SourceRecord
    from latentsearch.models.extractor import LatentEntityExtractor
    from latentsearch.models.factory import get_embedder

    embedder = get_embedder()
    chunker = TokenChunker(embedder.tokenizer, default_chunk_tokens(embedder.max_tokens), 10)
    records = [r for r in read_records(args.corpus, limit=args.limit) if isinstance(r, SourceRecord)]
    texts = [c.text for r in records for c in chunker.chunk(r)]
    single_texts = texts[: args.single_limit] if args.single_limit else texts

    batched = LatentEntityExtractor(adapter=args.adapter, batch_size=args.batch_size)
    single = LatentEntityExtractor(adapter=args.adapter, batch_size=1)
    batched.extract(texts[:2], "biomedical abstract", "disease")  # warm up
    results = {}
    for name, ext, items in (("batched", batched, texts), ("one at a time", single, single_texts)):
        t0 = time.perf_counter()
        for etype in TYPES:
            ext.extract(items, "biomedical abstract", etype)
        dt = time.perf_counter() - t0
        results[name] = {"chunks": len(items), "seconds": round(dt, 1), "chunks_per_s": round(len(items) / dt, 3),
                         "extractions_per_s": round(len(items) * len(TYPES) / dt, 2)}
    ratio = results["batched"]["chunks_per_s"] / results["one at a time"]["chunks_per_s"]
    print(f"{len(records)} abstracts -> {len(texts)} chunks; {len(TYPES)} entity types each; "
          f"batch size {args.batch_size}; adapter {batched.adapter or 'none (base model)'}")
    print(f"{'run':<16}{'chunks':>8}{'seconds':>10}{'chunks/s':>10}{'extractions/s':>15}")
    for name, r in results.items():
        print(f"{name:<16}{r['chunks']:>8}{r['seconds']:>10}{r['chunks_per_s']:>10}{r['extractions_per_s']:>15}")
    print(f"batched / one-at-a-time = {ratio:.2f}  (goal >= 4)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
