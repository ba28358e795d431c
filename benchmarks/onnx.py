"""ONNX (onnxruntime) vs PyTorch throughput, per exported model, on real SciFact text, in one process.

Runs are interleaved (torch, onnx, torch, onnx, ...) and the best of `--repeats` is kept, so a machine
shared with other jobs biases both sides alike; the load average is printed with the table.

    .venv/bin/python benchmarks/onnx.py --onnx ~/onnx                       # an existing export
    .venv/bin/python benchmarks/onnx.py --what embedder                      # exports into a temp dir first
    .venv/bin/python benchmarks/onnx.py --texts 512 --extractions 32 --json onnx-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# this script is named like the `onnx` package, and Python puts its folder first on the import path:
# take it off, or `import onnx` (inside optimum) would import this file
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "latentsearch" / "data" / "scifact-sample.jsonl"


def best_rate(fn: Callable[[], None], items: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=None, help="export folder (default: export into a temp dir)")
    parser.add_argument("--what", default="embedder,extractor,mentions",
                        help="models to compare: embedder, extractor, mentions (when exported)")
    parser.add_argument("--texts", type=int, default=256, help="SciFact chunks to embed per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--extractions", type=int, default=16, help="abstracts to extract one latent type from per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    what = [w.strip() for w in args.what.split(",") if w.strip()]

    from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
    from latentsearch.ingest.readers import read_records
    from latentsearch.ingest.records import SourceRecord
    from latentsearch.models.factory import get_embedder
    from latentsearch.models.onnx_manifest import load_manifest
    from latentsearch.onnx_export.export import export

    tmp = None
    root = args.onnx
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentsearch-onnx-bench-")
        root = Path(tmp.name)
        exportable = [w for w in what if w != "mentions"]  # the mention head may not be trained yet
        print(f"exporting {', '.join(exportable)} into {root} ...", flush=True)
        export(root, exportable)  # type: ignore[arg-type]
    _, manifest = load_manifest(root)
    rows = []
    torch_embedder = get_embedder()
    records = [r for r in read_records(SAMPLE, limit=500) if isinstance(r, SourceRecord)]

    if "embedder" in what:
        chunker = TokenChunker(torch_embedder.tokenizer, default_chunk_tokens(torch_embedder.max_tokens), 10)
        texts = [c.text for r in records for c in chunker.chunk(r)][: args.texts]
        onnx_embedder = get_embedder(str(root))
        onnx_embedder.encode(texts[:8])
        torch_embedder.encode(texts[:8])  # warm up both
        rates = {"torch": 0.0, "onnx": 0.0}
        for _ in range(args.repeats):
            rates["torch"] = max(rates["torch"], best_rate(lambda: torch_embedder.encode(texts, args.batch_size),
                                                           len(texts), 1))
            rates["onnx"] = max(rates["onnx"], best_rate(lambda: onnx_embedder.encode(texts, args.batch_size),
                                                         len(texts), 1))
        rows.append(("embedder", f"{len(texts)} chunks, batch {args.batch_size}", "texts/s", rates))

    if "extractor" in what:
        from latentsearch.models.factory import get_extractor

        torch_ex = get_extractor()
        onnx_ex = get_extractor(adapter=str(root))
        texts = [r.text for r in records[: args.extractions]]
        for ex in (torch_ex, onnx_ex):
            ex.extract(texts[:2], "biomedical abstract", "disease")  # warm up
        rates = {"torch": 0.0, "onnx": 0.0}
        for _ in range(args.repeats):
            for name, ex in (("torch", torch_ex), ("onnx", onnx_ex)):
                rate = best_rate(lambda ex=ex: ex.extract(texts, "biomedical abstract", "disease"), len(texts), 1)
                rates[name] = max(rates[name], rate)
        rows.append(("extractor", f"{len(texts)} abstracts x 1 type, greedy 12 tokens, batch 16", "extractions/s",
                     rates))

    if "mentions" in what:
        if "mentions" not in manifest.models:
            print("note: no mention encoder in this export (export-onnx --what mentions needs a trained head)")
        else:
            from latentsearch.models.mention_head import MentionVectorizer
            from latentsearch.models.onnx_runtime import OnnxMentionVectorizer
            from latentsearch.models.spans import get_span_detector

            head = Path(manifest.model("mentions").extra["head"])
            texts = [r.text for r in records[: args.extractions]]
            spans = get_span_detector("spacy").detect(texts)
            torch_mv, onnx_mv = MentionVectorizer(head_path=head), OnnxMentionVectorizer(root)
            n = sum(len(s) for s in spans)
            rates = {"torch": 0.0, "onnx": 0.0}
            for _ in range(args.repeats):
                for name, mv in (("torch", torch_mv), ("onnx", onnx_mv)):
                    rates[name] = max(rates[name], best_rate(lambda mv=mv: mv.encode_spans(texts, spans), n, 1))
            rows.append(("mentions", f"{len(texts)} abstracts, {n} spaCy spans", "mentions/s", rates))
    load = os.getloadavg()
    print(f"\nONNX (onnxruntime {manifest.versions.get('onnxruntime', '?')}) vs PyTorch "
          f"{manifest.versions.get('torch', '?')}, {os.cpu_count()} CPUs, load average {load[0]:.1f}")
    print(f"{'model':<11}{'workload':<52}{'unit':<15}{'torch':>9}{'onnx':>9}{'onnx/torch':>12}")
    out = []
    for model, workload, unit, rates in rows:
        ratio = rates["onnx"] / rates["torch"]
        print(f"{model:<11}{workload:<52}{unit:<15}{rates['torch']:>9.2f}{rates['onnx']:>9.2f}{ratio:>12.2f}")
        out.append({"model": model, "workload": workload, "unit": unit, "torch": round(rates["torch"], 3),
                    "onnx": round(rates["onnx"], 3), "ratio": round(ratio, 3)})
    if args.json:
        args.json.write_text(json.dumps({"rows": out, "load_average": load, "cpus": os.cpu_count()}, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
