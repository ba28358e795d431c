"""Latent-entity enrichment benchmark: the extraction strategies side by side, in one process and one run.

Chunks SciFact abstracts like ingest does, then extracts the BioASQ entity set the LentEx paper uses
(disease, drug, symptom, treatment, anatomical term, biomarker) with text_type "biomedical abstract":

    one at a time      the issue-17 baseline: batch size 1, one prompt per (chunk, type), transformers' generate
    batched            the same with batch size --batch-size (left-padded generate)
    shared prefix      text-first prompts: each chunk's text runs once, its KV cache serves all 6 types
    shared + early stop   the same with today's decoder: rows leave the batch at their first answer line, the
                       vocabulary projection only for the last position (the default path)
    shared + int8      the same with int8 dynamic quantisation of the Linear layers (not in the default runs:
                       int8 changes most values)

The shared-prefix rows use the text-first adapter (`--shared-adapter`, trained with
`latentsearch train extractor --prompt-format text-first`; its extraction eval is within a point of the
instruction-first one, see its model card). The slow rows (all but the last) run on `--slow-chunks` chunks spread
evenly over the corpus so the whole table fits in one sitting; rates are per chunk, so rows compare. Values of
"shared prefix" and "shared + early stop" are compared on the chunks both ran. The 1-minute load average is printed
with every row: the box may be shared.

    .venv/bin/python benchmarks/enrich.py --data ../shared/data --limit 200 --out benchmarks/results/enrich-200
    .venv/bin/python benchmarks/enrich.py --limit 4 --slow-chunks 2   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
TYPES = ["disease", "drug", "symptom", "treatment", "anatomical term", "biomarker"]
TEXT_TYPE = "biomedical abstract"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder holding scifact/corpus.jsonl (default: the "
                        "500-abstract sample shipped in the package)")
    parser.add_argument("--limit", type=int, default=200, help="abstracts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--adapter", default=str(REPO / "models/artifacts/lentex-smollm2-lora"),
                        help="instruction-first adapter for the baseline rows")
    parser.add_argument("--shared-adapter", default=str(REPO / "models/artifacts/lentex-smollm2-lora-textfirst"),
                        help="text-first adapter for the shared-prefix rows")
    parser.add_argument("--runs", default="one at a time,batched,shared prefix,shared + early stop")
    parser.add_argument("--slow-chunks", type=int, default=48, help="chunks for every run but the last (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) and a .json beside it")
    args = parser.parse_args()

    from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
    from latentsearch.ingest.readers import read_records
    from latentsearch.ingest.records import SourceRecord
    from latentsearch.models.extractor import LatentEntityExtractor
    from latentsearch.models.factory import get_embedder
    from latentsearch.samples import SAMPLE_CORPUS

    corpus = args.data / "scifact" / "corpus.jsonl" if args.data else SAMPLE_CORPUS
    embedder = get_embedder()
    chunker = TokenChunker(embedder.tokenizer, default_chunk_tokens(embedder.max_tokens), 10)
    records = [r for r in read_records(corpus, limit=args.limit) if isinstance(r, SourceRecord)]
    texts = [c.text for r in records for c in chunker.chunk(r)]
    types = [(t, None) for t in TYPES]

    def make(name: str) -> LatentEntityExtractor:
        if name == "one at a time":
            return LatentEntityExtractor(adapter=args.adapter, batch_size=1, early_stop=False)
        if name == "batched":
            return LatentEntityExtractor(adapter=args.adapter, batch_size=args.batch_size, early_stop=False)
        return LatentEntityExtractor(adapter=args.shared_adapter, batch_size=args.batch_size,
                                     prompt_format="text-first", int8=name == "shared + int8",
                                     early_stop=name != "shared prefix")

    names = [r.strip() for r in args.runs.split(",")]
    step = max(1, len(texts) // args.slow_chunks) if args.slow_chunks else 1
    slow = list(range(0, len(texts), step))[: args.slow_chunks or None]  # evenly spread over the corpus
    rows, outputs = [], {}
    for name in names:
        ext = make(name)
        ids = list(range(len(texts))) if name == names[-1] else slow
        ext.extract_types(texts[:1], TEXT_TYPE, types[:1])  # warm up
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = ext.extract_types([texts[i] for i in ids], TEXT_TYPE, types)
        dt = time.perf_counter() - t0
        outputs[name] = {i: [per_type[j] for per_type in out] for j, i in enumerate(ids)}
        rows.append({"run": name, "chunks": len(ids), "seconds": round(dt, 1),
                     "chunks_per_s": round(len(ids) / dt, 4),
                     "extractions_per_s": round(len(ids) * len(TYPES) / dt, 3),
                     "load_1m": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"})
        print(rows[-1], flush=True)
        del ext
    base = rows[0]["chunks_per_s"]
    for r in rows:
        r["x_first_row"] = round(r["chunks_per_s"] / base, 2)
    agree = {}
    for a, b in [("shared prefix", "shared + early stop"), ("shared prefix", "shared + int8"),
                 ("one at a time", "batched")]:
        if a in outputs and b in outputs:  # same prompts: the decoder's (or int8's, or batching's) effect on values
            both = sorted(set(outputs[a]) & set(outputs[b]))
            pairs = [(x, y) for i in both for x, y in zip(outputs[a][i], outputs[b][i])]
            agree[f"{b} == {a}, share of {len(pairs)} extractions"] = round(sum(x == y for x, y in pairs) / len(pairs), 3)

    head = (f"{len(records)} SciFact abstracts ({corpus}) -> {len(texts)} chunks x {len(TYPES)} types (slow rows: "
            f"{len(slow)} chunks spread over them); batch size {args.batch_size}; adapter {args.adapter}, shared-prefix "
            f"adapter {Path(args.shared_adapter).name}; {os.cpu_count()} CPUs, torch threads {_threads()}")
    lines = [head, "", "| run | chunks | seconds | chunks/s | extractions/s | x first row | load 1m (before->after) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['chunks']} | {r['seconds']} | {r['chunks_per_s']} | {r['extractions_per_s']} | "
              f"{r['x_first_row']} | {r['load_1m']} |" for r in rows]
    lines += [""] + [f"- {k}: {v}" for k, v in agree.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"setup": head, "rows": rows, "agreement": agree}, indent=2))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
