"""Latent-entity enrichment benchmark: the extraction strategies side by side, in one process and one run.

Chunks SciFact abstracts like ingest does, then extracts the BioASQ entity set the LentEx paper uses
(disease, drug, symptom, treatment, anatomical term, biomarker) with text_type "biomedical abstract":

    one at a time      today's path, batch size 1, one prompt per (chunk, type)
    batched            today's path, batch size --batch-size (left-padded generate)
    shared prefix      text-first prompts: each chunk's text runs once, its KV cache serves all 6 types
    shared + int8      the same with int8 dynamic quantisation of the Linear layers

The shared-prefix rows need a text-first adapter (`--shared-adapter`, trained with
`latentsearch train extractor --prompt-format text-first`); given the instruction-first adapter they still
measure the speed (the prompts are reordered) but not the quality. The 1-minute load average is printed with
every row: the box is shared.

    .venv/bin/python benchmarks/enrich.py --data /work/shared/data --limit 200
    .venv/bin/python benchmarks/enrich.py --limit 4 --out benchmarks/results/enrich-small.md   # a quick run
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
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adapter", default="default")
    parser.add_argument("--shared-adapter", default="default", help="text-first adapter for the shared-prefix rows")
    parser.add_argument("--runs", default="one at a time,batched,shared prefix,shared + int8")
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
            return LatentEntityExtractor(adapter=args.adapter, batch_size=1)
        if name == "batched":
            return LatentEntityExtractor(adapter=args.adapter, batch_size=args.batch_size)
        fmt = "text-first"
        return LatentEntityExtractor(adapter=args.shared_adapter, batch_size=args.batch_size, prompt_format=fmt,
                                     int8=name == "shared + int8")

    rows, outputs = [], {}
    for name in [r.strip() for r in args.runs.split(",")]:
        ext = make(name)
        ext.extract_types(texts[:1], TEXT_TYPE, types[:1])  # warm up
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = ext.extract_types(texts, TEXT_TYPE, types)
        dt = time.perf_counter() - t0
        outputs[name] = out
        rows.append({"run": name, "chunks": len(texts), "seconds": round(dt, 1),
                     "chunks_per_s": round(len(texts) / dt, 4),
                     "extractions_per_s": round(len(texts) * len(TYPES) / dt, 3),
                     "load_1m": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"})
        print(rows[-1], flush=True)
    base = rows[0]["chunks_per_s"]
    for r in rows:
        r["x_first_row"] = round(r["chunks_per_s"] / base, 2)
    agree = {}
    if "shared prefix" in outputs and "shared + int8" in outputs:  # same prompts: int8's effect on the values
        a, b = outputs["shared prefix"], outputs["shared + int8"]
        pairs = [(x, y) for ta, tb in zip(a, b) for x, y in zip(ta, tb)]
        agree["int8 == float (shared prefix), share of extractions"] = round(sum(x == y for x, y in pairs) / len(pairs), 3)
    if "one at a time" in outputs and "batched" in outputs:
        a, b = outputs["one at a time"], outputs["batched"]
        pairs = [(x, y) for ta, tb in zip(a, b) for x, y in zip(ta, tb)]
        agree["batched == one at a time, share of extractions"] = round(sum(x == y for x, y in pairs) / len(pairs), 3)

    head = (f"{len(records)} SciFact abstracts ({corpus}) -> {len(texts)} chunks x {len(TYPES)} types; "
            f"batch size {args.batch_size}; adapter {args.adapter}, shared-prefix adapter {args.shared_adapter}; "
            f"{os.cpu_count()} CPUs, torch threads {_threads()}")
    lines = [head, "", "| run | chunks | seconds | chunks/s | extractions/s | x first row | load 1m (before->after) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['chunks']} | {r['seconds']} | {r['chunks_per_s']} | {r['extractions_per_s']} | "
              f"{r['x_first_row']} | {r['load_1m']} |" for r in rows]
    lines += [""] + [f"- {k}: {v}" for k, v in agree.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"setup": head, "rows": rows, "agreement": agree}, indent=2))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
