"""Why was latentsearch's BM25 12 points below BEIR's on SciFact? An ablation of lexical scoring (issue 15).

Every row is Lucene's BM25 (k1=1.2, b=0.75, idf = ln(1 + (N - n + 0.5)/(n + 0.5)), no (k1+1) factor)
computed here with sparse matrices, over the same chunks `latentsearch ingest` writes (the embedder's
tokenizer, its chunk size and overlap, the title copied into every chunk) or over whole documents.
Chunk-level rows rank documents by their best chunk (the `collapse` on `doc_id` the search bodies use).

    python benchmarks/lexical_ablation.py --data ../shared/data/scifact --split train \
        --out benchmarks/results/lexical-ablation-scifact-train.json

Factors: unit (chunk | doc), how title and text combine (best_fields with title^2 [the old default],
best_fields tie 0.5 [BEIR's query], most_fields, combined_fields [BM25F], one title+text field), the title
repeated per chunk or only on the first, IDF and avgdl over chunks vs documents, the analyzer.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import sparse

from latentsearch.backends.embedded.analysis import get_analyzer
from latentsearch.backends.embedded.snapshot import lucene_length
from latentsearch.config import IngestConfig
from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
from latentsearch.ingest.records import SourceRecord
from latentsearch.lab.eval_retrieval import evaluate_run, load_qrels, load_queries

K1, B = 1.2, 0.75


@dataclass
class Field:
    """One indexed field over units: term counts (units x vocab) and lengths."""

    tf: sparse.csr_matrix
    length: np.ndarray


class Vocab:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def field(self, texts: list[str], analyzer: str) -> Field:
        fn = get_analyzer(analyzer)
        rows, cols, lengths = [], [], np.zeros(len(texts))
        for r, text in enumerate(texts):
            toks = fn(text) if text else []
            lengths[r] = len(toks)
            for t in toks:
                rows.append(r)
                cols.append(self.ids.setdefault(t, len(self.ids)))
        m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), 2_000_000))
        m.sum_duplicates()
        return Field(m, lengths)

    def query(self, texts: list[str], analyzer: str) -> sparse.csr_matrix:
        fn = get_analyzer(analyzer)
        rows, cols = [], []
        for r, text in enumerate(texts):
            for t in fn(text):
                if t in self.ids:
                    rows.append(r)
                    cols.append(self.ids[t])
        m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), 2_000_000))
        m.sum_duplicates()
        return m


def _fit(m: sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    return m[:, :n].tocsr()


def bm25_weights(tf: sparse.csr_matrix, length: np.ndarray, *, df: np.ndarray | None = None,
                 n_docs: float | None = None, avgdl: float | None = None, lossy: bool = True) -> sparse.csr_matrix:
    """units x vocab matrix of per-term BM25 scores (query-term weight 1)."""
    present = length > 0
    n_docs = n_docs if n_docs is not None else float(present.sum())
    avgdl = avgdl if avgdl is not None else float(length.sum() / max(n_docs, 1))
    if df is None:
        df = np.asarray((tf > 0).sum(axis=0)).ravel()
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    dl = lucene_length(length) if lossy else length
    norm = K1 * (1 - B + B * dl / avgdl)
    coo = tf.tocoo()
    data = idf[coo.col] * coo.data / (coo.data + norm[coo.row])
    return sparse.csr_matrix((data, (coo.row, coo.col)), shape=tf.shape)


def combined_weights(fields: list[Field], weights: list[float]) -> sparse.csr_matrix:
    """Lucene's CombinedFieldQuery (BM25F): weighted tf and length summed over fields, df = max over fields."""
    tf = sum(w * f.tf for f, w in zip(fields, weights))
    length = sum(w * (lucene_length(f.length)) for f, w in zip(fields, weights))
    n_docs = float(max((f.length > 0).sum() for f in fields))
    avgdl = float(sum(w * f.length.sum() for f, w in zip(fields, weights)) / n_docs)
    df = np.max(np.stack([np.asarray((f.tf > 0).sum(axis=0)).ravel() for f in fields]), axis=0)
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    norm = K1 * (1 - B + B * length / avgdl)
    coo = tf.tocoo()
    data = idf[coo.col] * coo.data / (coo.data + norm[coo.row])
    return sparse.csr_matrix((data, (coo.row, coo.col)), shape=tf.shape)


def run_of(scores: np.ndarray, unit_doc: np.ndarray, doc_ids: list[str], qids: list[str], top: int = 100) -> dict:
    """units x queries scores -> document-level run (max over a document's units)."""
    n_docs = len(doc_ids)
    run: dict[str, dict[str, float]] = {}
    if len(unit_doc) != n_docs:
        best = np.full((n_docs, scores.shape[1]), -np.inf)
        np.maximum.at(best, unit_doc, scores)
        scores = best
    for j, q in enumerate(qids):
        s = scores[:, j]
        idx = np.argpartition(-s, top)[:top]
        idx = idx[s[idx] > 0]
        run[q] = {doc_ids[i]: float(s[i]) for i in idx}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder (corpus.jsonl, queries.*, qrels/)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2", help="Its tokenizer and length set the chunks")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lexical-ablation-scifact-train.json"))
    args = ap.parse_args()
    console = Console()
    t_start = time.time()

    records = []
    with open(args.data / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            records.append(SourceRecord(id=str(d["_id"]), text=d.get("text") or "", title=d.get("title") or None))
    qrels = load_qrels(args.data / "qrels" / f"{args.split}.tsv")
    queries = load_queries(args.data / f"queries.{args.split}.jsonl", with_qrels=set(qrels))
    qids, qtexts = list(queries), list(queries.values())

    from latentsearch.models.factory import get_embedder

    emb = get_embedder(args.embedder)
    cfg = IngestConfig()
    chunker = TokenChunker(emb.tokenizer, cfg.chunk_tokens or default_chunk_tokens(emb.max_tokens), cfg.chunk_overlap,
                           model_max_tokens=emb.max_tokens)
    chunks = [c for r in records for c in chunker.chunk(r)]
    doc_ids = [r.id for r in records]
    doc_row = {d: i for i, d in enumerate(doc_ids)}
    chunk_doc = np.asarray([doc_row[c.doc_id] for c in chunks])
    console.print(f"{len(records)} documents, {len(chunks)} chunks, {len(qids)} {args.split} queries "
                  f"({time.time() - t_start:.0f} s)")

    rows: list[dict] = []

    def record(name: str, unit: str, combine: str, analyzer: str, note: str, scores: np.ndarray, units: np.ndarray):
        m = evaluate_run(qrels, run_of(scores, units, doc_ids, qids))
        rows.append({"config": name, "unit": unit, "combine": combine, "analyzer": analyzer, "note": note,
                     "ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]})
        console.print(f"  {name:58s} nDCG@10 {m['ndcg@10']:.4f}  R@100 {m['recall@100']:.4f}")

    for analyzer in ("standard", "english"):
        voc = Vocab()
        c_title = voc.field([c.title or "" for c in chunks], analyzer)
        c_title_first = voc.field([(c.title or "") if c.no == 0 else "" for c in chunks], analyzer)
        c_text = voc.field([c.text for c in chunks], analyzer)
        c_one = voc.field([f"{c.title or ''} {c.text}" for c in chunks], analyzer)
        c_one_first = voc.field([f"{c.title or ''} {c.text}" if c.no == 0 else c.text for c in chunks], analyzer)
        d_title = voc.field([r.title or "" for r in records], analyzer)
        d_text = voc.field([r.text for r in records], analyzer)
        d_one = voc.field([f"{r.title or ''} {r.text}" for r in records], analyzer)
        c_doc = voc.field([f"{records[i].title or ''} {records[i].text}" for i in chunk_doc], analyzer)
        n = len(voc.ids)
        for f in (c_title, c_title_first, c_text, c_one, c_one_first, d_title, d_text, d_one, c_doc):
            f.tf = _fit(f.tf, n)
        q = _fit(voc.query(qtexts, analyzer), n).T.tocsc()  # vocab x queries

        def score(w: sparse.csr_matrix, q: sparse.csc_matrix = q) -> np.ndarray:
            return np.asarray((w @ q).todense())

        def best(ws: list[sparse.csr_matrix], boosts: list[float], tie: float) -> np.ndarray:
            s = np.stack([b * score(w) for w, b in zip(ws, boosts)])
            mx = s.max(axis=0)
            return mx + tie * (s.sum(axis=0) - mx)

        a = analyzer
        wt, wx = bm25_weights(c_title.tf, c_title.length), bm25_weights(c_text.tf, c_text.length)
        record(f"chunk · best_fields title^2,text · {a}", "chunk", "best_fields title^2", a,
               "the default before issue 15", best([wt, wx], [2, 1], 0.0), chunk_doc)
        record(f"chunk · best_fields title,text tie 0.5 · {a}", "chunk", "best_fields tie 0.5", a, "BEIR's query",
               best([wt, wx], [1, 1], 0.5), chunk_doc)
        record(f"chunk · most_fields title,text · {a}", "chunk", "most_fields", a, "",
               best([wt, wx], [1, 1], 1.0), chunk_doc)
        record(f"chunk · combined_fields title,text · {a}", "chunk", "combined_fields", a, "BM25F",
               score(combined_weights([c_title, c_text], [1, 1])), chunk_doc)
        record(f"chunk · one field title+text · {a}", "chunk", "one field", a, "title in every chunk",
               score(bm25_weights(c_one.tf, c_one.length)), chunk_doc)
        record(f"chunk · one field, title on chunk 0 only · {a}", "chunk", "one field", a, "title once",
               score(bm25_weights(c_one_first.tf, c_one_first.length)), chunk_doc)
        wtf = bm25_weights(c_title_first.tf, c_title_first.length)
        record(f"chunk · most_fields, title on chunk 0 only · {a}", "chunk", "most_fields", a, "title once",
               best([wtf, wx], [1, 1], 1.0), chunk_doc)
        # document text on every chunk: a document-level field whose df and avgdl count chunks
        record(f"doc text on every chunk (IDF over chunks) · {a}", "doc-on-chunk", "one field", a,
               "df, N, avgdl over chunks", score(bm25_weights(c_doc.tf, c_doc.length)), chunk_doc)
        one_doc = np.arange(len(records))
        wt, wx = bm25_weights(d_title.tf, d_title.length), bm25_weights(d_text.tf, d_text.length)
        record(f"doc · best_fields title^2,text · {a}", "doc", "best_fields title^2", a, "",
               best([wt, wx], [2, 1], 0.0), one_doc)
        record(f"doc · best_fields title,text tie 0.5 · {a}", "doc", "best_fields tie 0.5", a, "BEIR's query",
               best([wt, wx], [1, 1], 0.5), one_doc)
        record(f"doc · most_fields title,text · {a}", "doc", "most_fields", a, "",
               best([wt, wx], [1, 1], 1.0), one_doc)
        record(f"doc · combined_fields title,text · {a}", "doc", "combined_fields", a, "BM25F",
               score(combined_weights([d_title, d_text], [1, 1])), one_doc)
        record(f"doc · one field title+text · {a}", "doc", "one field", a, "= bm25s over title+abstract",
               score(bm25_weights(d_one.tf, d_one.length)), one_doc)
        record(f"doc · one field title+text, exact lengths · {a}", "doc", "one field", a,
               "Lucene's lossy norm byte off", score(bm25_weights(d_one.tf, d_one.length, lossy=False)), one_doc)

    report = {"dataset": str(args.data.name), "split": args.split, "queries": len(qids), "documents": len(records),
              "chunks": len(chunks), "bm25": {"k1": K1, "b": B, "idf": "ln(1 + (N - n + 0.5)/(n + 0.5))"},
              "rows": rows, "seconds": round(time.time() - t_start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"lexical ablation: SciFact {args.split}, {len(qids)} queries, {len(records)} documents")
    for col in ("configuration", "nDCG@10", "Recall@100", "note"):
        table.add_column(col, justify="right" if col[0].isupper() or col.startswith("n") and col != "note" else "left")
    for r in rows:
        table.add_row(r["config"], f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}", r["note"])
    console.print(table)
    console.print(f"saved {args.out}")


if __name__ == "__main__":
    main()
