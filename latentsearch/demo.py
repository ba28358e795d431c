"""`latentsearch demo`: the main job end to end on the embedded engine with real SciFact data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentsearch.config import EntitySchema, load_settings

DATA = Path(__file__).parent / "data"
SAMPLE_CORPUS = DATA / "scifact-sample.jsonl"
SAMPLE_QUERIES = DATA / "scifact-sample-queries.jsonl"
# SciFact in BEIR layout next to the checkout (the team's shared data folder)
SHARED_SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
SCIFACT_SCHEMA = EntitySchema(
    text_type="biomedical abstract",
    latent_types=["disease", "chemical", "gene", "organism", "anatomy", "biological_process"],
)


def default_corpus() -> tuple[Path, Path]:
    """(corpus, queries): the full shared SciFact when present, else the bundled sample."""
    if (SHARED_SCIFACT / "corpus.jsonl").is_file():
        return SHARED_SCIFACT / "corpus.jsonl", SHARED_SCIFACT / "queries.train.jsonl"
    return SAMPLE_CORPUS, SAMPLE_QUERIES


def load_queries(path: Path, n: int) -> list[dict[str, Any]]:
    """The first n claims that have evidence; `relevant` from the file or the BEIR qrels beside it."""
    qrels: dict[str, list[str]] = {}
    qrels_file = path.parent / "qrels" / "train.tsv"
    if qrels_file.is_file():
        for row in qrels_file.read_text(encoding="utf-8").splitlines()[1:]:
            qid, doc, *_ = row.split("\t")
            qrels.setdefault(qid, []).append(doc)
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            q.setdefault("relevant", qrels.get(q["_id"], []))
            if q["relevant"]:
                out.append(q)
            if len(out) >= n:
                break
    return out


def run(
    *,
    corpus: Path | None,
    index: str,
    limit: int | None,
    n_queries: int,
    k: int,
    fresh: bool,
    latent: bool = False,
    print_hits: Callable[[Any], None],
    console: Any,
) -> None:
    from latentsearch.backends import open_backend
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.models.embedder import get_embedder
    from latentsearch.query.search import search

    default_docs, queries_path = default_corpus()
    corpus = corpus or default_docs
    settings = load_settings(index=index, entities=SCIFACT_SCHEMA)
    settings.ingest.latent = latent  # LLM extraction of 6 types per chunk is slow on CPU: opt-in here
    if settings.backend.resolved_kind != "embedded":
        console.print(f"[yellow]note: running the demo on the configured {settings.backend.resolved_kind} backend[/]")
    backend = open_backend(settings.backend)
    if fresh:
        backend.delete_index(index)
    console.print(f"[bold]1/2 ingest[/] {corpus} → index [cyan]{index}[/] ({settings.backend.resolved_kind}, "
                  f"{settings.backend.resolved_embedded_path if settings.backend.resolved_kind == 'embedded' else settings.backend.url})")
    report = ingest(corpus, settings, index=index, limit=limit, backend=backend)
    console.print(f"   {report.records_read} abstracts read ({report.records_skipped_by_checkpoint} already ingested), "
                  f"{report.chunks_written} chunks written, {report.rejected} rejected, "
                  f"{report.embeddings_cached} embeddings from cache, {report.seconds:.1f} s")
    console.print(f"[bold]2/2 search[/] {n_queries} SciFact claims (dense kNN, one hit per abstract)")
    embedder = get_embedder(settings.models.embedder, settings.models.device)
    for q in load_queries(queries_path if corpus == default_docs else SAMPLE_QUERIES, n_queries):
        result = search(q["text"], backend=backend, index=index, embedder=embedder, k=k)
        console.print(f"\n[bold]claim {q['_id']}:[/] {q['text']}")
        print_hits(result)
        relevant = set(q.get("relevant", []))
        if relevant:
            found = [h.doc_id for h in result.hits if h.doc_id in relevant]
            console.print(f"   evidence abstracts {sorted(relevant)}: {'found ' + ', '.join(found) if found else 'not in top ' + str(k)}")
