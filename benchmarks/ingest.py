"""Ingest benchmark: is latentsearch ingest bound by the model, and how does it compare to LangChain?

Runs, in one process and on the same SciFact texts:
  (a) raw embedder throughput: the exact chunk texts ingest embeds, encoded in one call;
  (b) `latentsearch ingest` into the embedded backend (read, chunk, embed, write), docs/s and peak RSS;
  (c) the peer: LangChain's LanceDB vector store `add_texts` with the same embedding model and the
      same chunk texts (langchain-community's HuggingFaceEmbeddings on the same model folder).
and prints a table with the ratios (b)/(a) and (b)/(c).

    .venv/bin/python benchmarks/ingest.py                 # full SciFact corpus (5,183 abstracts)
    .venv/bin/python benchmarks/ingest.py --limit 500     # a quicker run
    .venv/bin/python benchmarks/ingest.py --json out.json

Needs langchain-community for (c) (`pip install -e '.[langchain]'`); `--skip-peer` runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


class PeakRSS:
    """Samples this process's RSS every 50 ms; `peak` is the max seen during the `with` block."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from latentsearch.config import load_settings
    from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.ingest.processors import EmbeddingProcessor
    from latentsearch.ingest.readers import read_records
    from latentsearch.ingest.records import SourceRecord
    from latentsearch.models.factory import get_embedder

    corpus = args.corpus
    work = Path(tempfile.mkdtemp(prefix="ls-bench-"))
    if args.limit:
        sliced = work / "corpus.jsonl"
        with corpus.open("rb") as src, sliced.open("wb") as dst:
            for i, line in enumerate(src):
                if i >= args.limit:
                    break
                dst.write(line)
        corpus = sliced
    os.environ["LATENTSEARCH_HOME"] = str(work / "home")

    embedder = get_embedder()
    embedder.encode(["warm up"])  # load + first-call costs are not part of any measurement
    import lancedb  # noqa: F401 - one-time import (~5 s cold) is not part of (b) either
    chunker = TokenChunker(embedder.tokenizer, default_chunk_tokens(embedder.max_tokens), 10)
    records = [r for r in read_records(corpus) if isinstance(r, SourceRecord)]
    chunks = [c for r in records for c in chunker.chunk(r)]
    texts = [EmbeddingProcessor(embedder).input_text(c) for c in chunks]
    n_docs = len(records)
    print(f"corpus {args.corpus.name}: {n_docs} documents -> {len(chunks)} chunks "
          f"(chunk size {chunker.size} tokens, overlap {chunker.overlap}); torch threads {_torch_threads()}")

    rows: dict[str, dict[str, float]] = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        embedder.encode(texts, batch_size=args.batch_size)
        dt = time.perf_counter() - t0
    rows["(a) raw embedder"] = {"seconds": dt, "docs_per_s": n_docs / dt, "chunks_per_s": len(texts) / dt,
                                "peak_rss_mb": mem.peak / 1e6}

    settings = load_settings(index="bench", ingest={"embed_batch_size": args.batch_size, "cache": False})
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        report = ingest(corpus, settings, progress=False)
        dt = time.perf_counter() - t0
    assert report.chunks_written == len(chunks) and report.rejected == 0, report
    rows["(b) latentsearch ingest"] = {"seconds": dt, "docs_per_s": n_docs / dt, "chunks_per_s": len(chunks) / dt,
                                       "peak_rss_mb": mem.peak / 1e6}

    if not args.skip_peer:
        from langchain_community.embeddings import HuggingFaceEmbeddings
        from langchain_community.vectorstores import LanceDB

        lc_embed = HuggingFaceEmbeddings(model_name=embedder.path, encode_kwargs={"batch_size": args.batch_size})
        lc_embed.embed_documents(["warm up"])
        store = LanceDB(uri=str(work / "langchain"), embedding=lc_embed, table_name="bench", mode="overwrite")
        metadatas = [{"doc_id": c.doc_id, "chunk": c.no} for c in chunks]
        ids = [c.id for c in chunks]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            store.add_texts(texts, metadatas=metadatas, ids=ids)
            dt = time.perf_counter() - t0
        rows["(c) LangChain LanceDB add_texts"] = {"seconds": dt, "docs_per_s": n_docs / dt,
                                                  "chunks_per_s": len(chunks) / dt, "peak_rss_mb": mem.peak / 1e6}

    _print(rows, n_docs, len(chunks))
    if args.json:
        args.json.write_text(json.dumps({"documents": n_docs, "chunks": len(chunks), "rows": rows}, indent=2))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _print(rows: dict[str, dict[str, float]], n_docs: int, n_chunks: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest benchmark: {n_docs} docs, {n_chunks} chunks, embedded backend")
    for col in ("run", "seconds", "docs/s", "chunks/s", "peak RSS (MB)"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for name, r in rows.items():
        table.add_row(name, f"{r['seconds']:.1f}", f"{r['docs_per_s']:.1f}", f"{r['chunks_per_s']:.1f}",
                      f"{r['peak_rss_mb']:.0f}")
    console = Console()
    console.print(table)
    b = rows["(b) latentsearch ingest"]["docs_per_s"]
    console.print(f"(b)/(a) = {b / rows['(a) raw embedder']['docs_per_s']:.2f}  (goal >= 0.8: ingest is bound by the model)")
    peer = rows.get("(c) LangChain LanceDB add_texts")
    if peer:
        console.print(f"(b)/(c) = {b / peer['docs_per_s']:.2f}  (goal >= 2)")


if __name__ == "__main__":
    main()
