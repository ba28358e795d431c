"""`demo`: the main job end to end on the embedded engine with real SciFact data: ingest, then run
judged claims as questions through the same `Retriever` as `search`, and say whether the evidence
abstracts came back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from latentsearch.cli.output import print_hits, run, stdout
from latentsearch.config import EntitySchema, Settings, load_settings
from latentsearch.samples import SAMPLE_CORPUS, SAMPLE_QUERIES

SCIFACT_SCHEMA = EntitySchema(
    text_type="biomedical abstract",
    latent_types=["disease", "chemical", "gene", "organism", "anatomy", "biological_process"],
)


def default_corpus(settings: Settings) -> tuple[Path, Path]:
    """(corpus, queries): SciFact under the configured data folder when present, else the bundled sample."""
    scifact = settings.data_dir / "scifact" if settings.data_dir else None
    if scifact is not None and (scifact / "corpus.jsonl").is_file():
        return scifact / "corpus.jsonl", scifact / "queries.train.jsonl"
    return SAMPLE_CORPUS, SAMPLE_QUERIES


def load_queries(path: Path, n: int) -> list[dict[str, Any]]:
    """The first n claims that have evidence; `relevant` from the file or the BEIR qrels beside it."""
    qrels: dict[str, list[str]] = {}
    qrels_file = path.parent / "qrels" / "train.tsv"
    if qrels_file.is_file():
        for row in qrels_file.read_text(encoding="utf-8").splitlines()[1:]:
            qid, doc, *_ = row.split("\t")
            qrels.setdefault(qid, []).append(doc)
    found = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            q.setdefault("relevant", qrels.get(q["_id"], []))
            if q["relevant"]:
                found.append(q)
            if len(found) >= n:
                break
    return found


def demo(
    corpus: Annotated[Path | None, typer.Option(help="Corpus to ingest (default: SciFact under config `data_dir` / "
                                                     "$LATENTSEARCH_DATA_DIR, else the bundled 500-abstract sample)")] = None,
    index: Annotated[str, typer.Option("--index", "-i", help="Index to (re)build")] = "scifact-demo",
    limit: Annotated[int | None, typer.Option(help="Ingest at most N abstracts")] = None,
    queries: Annotated[int, typer.Option(help="How many SciFact claims to run as queries")] = 3,
    k: Annotated[int, typer.Option("--k", "-k")] = 5,
    fresh: Annotated[bool, typer.Option(help="Delete and rebuild the index first")] = False,
    latent: Annotated[bool, typer.Option(help="Also extract latent entities (LLM; slow on CPU)")] = False,
) -> None:
    """End to end on the embedded engine: ingest SciFact abstracts, run claims as queries, print hits."""
    run(lambda: run_demo(corpus=corpus, index=index, limit=limit, n_queries=queries, k=k, fresh=fresh, latent=latent))


def run_demo(*, corpus: Path | None, index: str, limit: int | None, n_queries: int, k: int, fresh: bool,
             latent: bool = False) -> None:
    from latentsearch.backends import open_backend
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.query.retrieval import Retriever

    settings = load_settings(index=index, entities=SCIFACT_SCHEMA)
    default_docs, queries_path = default_corpus(settings)
    corpus = corpus or default_docs
    settings.ingest.latent = latent  # LLM extraction of 6 types per chunk is slow on CPU: opt-in here
    if settings.backend.resolved_kind != "embedded":
        stdout.print(f"[yellow]note: running the demo on the configured {settings.backend.resolved_kind} backend[/]")
    backend = open_backend(settings.backend)
    if fresh:
        backend.delete_index(index)
    where = (settings.backend.resolved_embedded_path if settings.backend.resolved_kind == "embedded"
             else settings.backend.url)
    stdout.print(f"[bold]1/2 ingest[/] {corpus} → index [cyan]{index}[/] ({settings.backend.resolved_kind}, {where})")
    report = ingest(corpus, settings, index=index, limit=limit, backend=backend)
    stdout.print(f"   {report.records_read} abstracts read ({report.records_skipped_by_checkpoint} already ingested), "
                 f"{report.chunks_written} chunks written, {report.rejected} rejected, "
                 f"{report.embeddings_cached} embeddings from cache, {report.seconds:.1f} s")
    stdout.print(f"[bold]2/2 search[/] {n_queries} SciFact claims (one hit per abstract)")
    retriever = Retriever.from_settings(settings, backend=backend, latent=latent)
    for q in load_queries(queries_path if corpus == default_docs else SAMPLE_QUERIES, n_queries):
        result = retriever.search(q["text"], k=k)
        stdout.print(f"\n[bold]claim {q['_id']}:[/] {q['text']}")
        print_hits(result)
        relevant = set(q.get("relevant", []))
        if relevant:
            found = [h.doc_id for h in result.hits if h.doc_id in relevant]
            stdout.print(f"   evidence abstracts {sorted(relevant)}: "
                         f"{'found ' + ', '.join(found) if found else 'not in top ' + str(k)}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
