"""`demo`: the product end to end on the embedded engine with real SciFact data. It ingests a few dozen
bundled abstracts WITH latent entities (read from titles, two types, so it finishes in minutes on 2 CPU
cores), then runs judged claims through the same `Retriever` as `search` and shows, per claim, what latent
filtering did: the question's entities and the index values they mapped to, documents per strictness
level, the level chosen and why, and the dense and rewritten rankings side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from latentsearch.cli.output import run, stderr, stdout
from latentsearch.config import EntitySchema, load_settings
from latentsearch.samples import SAMPLE_CORPUS, SAMPLE_QUERIES

SCIFACT_SCHEMA = EntitySchema(
    text_type="biomedical abstract",
    latent_types=["disease", "chemical", "gene", "organism", "anatomy", "biological_process"],
)
#: The demo's schema: two types read from titles (the setup of the SciFact-600 figures, README).
DEMO_SCHEMA = EntitySchema(
    text_type="biomedical article title",
    query_text_type="biomedical claim",
    latent_types=[{"name": "anatomy"}, {"name": "research_field", "description": "research field"}],
)
#: Claims of the bundled sample whose evidence is in it and whose entities the demo index holds.
DEMO_CLAIMS = ("71", "79", "106")
#: auto's "documents a level must keep": 1 on the demo's small index (the CLI's default, 5, suits full corpora).
DEMO_MIN_HITS = 1


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
    corpus: Annotated[Path | None, typer.Option(help="JSONL corpus to ingest instead of the bundled SciFact "
                                                     "sample subset (claims then come from the sample)")] = None,
    index: Annotated[str, typer.Option("--index", "-i", help="Index to (re)build")] = "scifact-demo",
    limit: Annotated[int, typer.Option(help="Abstracts to ingest: the claims' evidence plus sample "
                                            "abstracts up to N")] = 30,
    queries: Annotated[int, typer.Option(help="How many SciFact claims to run")] = 3,
    k: Annotated[int, typer.Option("--k", "-k")] = 8,
    fresh: Annotated[bool, typer.Option(help="Delete and rebuild the index first")] = False,
    latent: Annotated[bool, typer.Option(help="Extract latent entities (the point of the demo); --no-latent "
                                              "runs dense search only")] = True,
) -> None:
    """The product end to end: ingest SciFact abstracts with latent entities, then show per claim the
    entities, the strictness ladder, the chosen level and dense vs rewritten ranks."""
    run(lambda: run_demo(corpus=corpus, index=index, limit=limit, n_queries=queries, k=k, fresh=fresh,
                         latent=latent))


def demo_subset(folder: Path, claims: list[dict[str, Any]], limit: int) -> Path:
    """The claims' evidence abstracts first, then sample abstracts in file order, `limit` in all."""
    wanted = {d for q in claims for d in q["relevant"]}
    lines = SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()
    evidence = [ln for ln in lines if ln.strip() and json.loads(ln)["_id"] in wanted]
    others = [ln for ln in lines if ln.strip() and json.loads(ln)["_id"] not in wanted]
    chosen = evidence + others[: max(0, limit - len(evidence))]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"demo-corpus-{len(chosen)}.jsonl"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


class _ChunkProgress:
    """Runs a processor in small slices so the bar (on stderr, with ETA) moves per chunk, not per batch."""

    def __init__(self, proc: Any, bar: Any, task: Any, step: int):
        self.proc, self.bar, self.task, self.step = proc, bar, task, step
        self.name = getattr(proc, "name", type(proc).__name__)

    def __call__(self, chunks: list[Any], cache: Any = None) -> list[Any]:
        done = self.bar.tasks[self.task].completed  # chunks are known batch by batch: the total grows with them
        self.bar.update(self.task, total=max(self.bar.tasks[self.task].total or 0, done + len(chunks)))
        for i in range(0, len(chunks), self.step):
            part = chunks[i: i + self.step]
            self.proc(part, cache)
            self.bar.advance(self.task, len(part))
            if not self.bar.console.is_terminal:  # piped or logged: a plain line per slice instead of a live bar
                task = self.bar.tasks[self.task]
                eta = f", about {task.time_remaining:.0f} s left" if task.time_remaining else ""
                self.bar.console.print(f"{task.description}: {int(task.completed)}/{int(task.total or 0)}{eta}")
        return chunks


def claim_queries(n: int) -> list[dict[str, Any]]:
    """The demo claims (DEMO_CLAIMS first, then other sample claims with evidence)."""
    found = load_queries(SAMPLE_QUERIES, 10_000)
    order = {qid: i for i, qid in enumerate(DEMO_CLAIMS)}
    found.sort(key=lambda q: order.get(q["_id"], len(order)))
    return found[:n]


def run_demo(*, corpus: Path | None, index: str, limit: int | None, n_queries: int, k: int, fresh: bool,
             latent: bool = True) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from latentsearch.backends import open_backend
    from latentsearch.ingest.pipeline import default_processors, ingest
    from latentsearch.models.factory import get_embedder
    from latentsearch.query.retrieval import Retriever

    settings = load_settings(index=index, entities=DEMO_SCHEMA)
    settings.ingest.latent = latent
    settings.ingest.latent_input = "title"
    claims = claim_queries(n_queries)
    path = corpus or demo_subset(settings.home / "demo", claims, limit or 30)
    if settings.backend.resolved_kind != "embedded":
        stderr.print(f"[yellow]note: running the demo on the configured {settings.backend.resolved_kind} backend[/]")
    backend = open_backend(settings.backend)
    if fresh:
        backend.delete_index(index)
    n_docs = sum(1 for ln in path.open(encoding="utf-8") if ln.strip())
    if corpus is not None and limit:
        n_docs = min(n_docs, limit)
    types = ", ".join(settings.entities.type_names)
    engine = "embedded engine" if settings.backend.resolved_kind == "embedded" else \
        f"{settings.backend.resolved_kind} at {settings.backend.url}"
    stdout.print(f"[bold]1/2 ingest[/] {n_docs} SciFact abstracts → index [cyan]{index}[/] ({engine}); "
                 + (f"latent types [bold]{types}[/] read from titles by the LentEx extractor (SmolLM2 + LoRA)"
                    if latent else "dense vectors only"))
    embedder = get_embedder(settings.models.embedder, settings.models.device)
    started = time.perf_counter()
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True))
    with bar:
        procs = []
        for proc in default_processors(settings, embedder):
            task = bar.add_task(f"{getattr(proc, 'name', 'step')} per chunk", total=None)
            procs.append(_ChunkProgress(proc, bar, task, 8 if getattr(proc, "name", "") == "latent" else 32))
        report = ingest(path, settings, index=index, backend=backend, processors=procs, progress=False,
                        limit=limit if corpus is not None else None)  # --limit also caps a --corpus of your own
    stdout.print(f"   {report.records_read} abstracts read ({report.records_skipped_by_checkpoint} already ingested), "
                 f"{report.chunks_written} chunks written, {report.rejected} rejected, "
                 f"{time.perf_counter() - started:.0f} s")
    retriever = Retriever.from_settings(settings, backend=backend, embedder=embedder, latent=latent)
    stdout.print(f"\n[bold]2/2 search[/] {len(claims)} SciFact claims: dense k-NN vs the query rewriter "
                 f"(latent-entity filter inside k-NN, strictness auto, min_hits {DEMO_MIN_HITS})")
    for q in claims:
        show_claim(retriever, q, k)


def _mark(doc_id: str, relevant: set[str]) -> str:
    return f"[bold green]{doc_id} ✓[/]" if doc_id in relevant else doc_id


def show_claim(retriever: Any, q: dict[str, Any], k: int) -> None:
    """One claim: entities → values, documents per level, the chosen level and why, both rankings."""
    relevant = set(q.get("relevant", []))
    dense = retriever.search(q["text"], k=k, rewrite=False)
    rewritten = retriever.search(q["text"], k=k, min_hits=DEMO_MIN_HITS)
    stdout.print(f"\n[bold]claim {q['_id']}:[/] {q['text']}   [dim](evidence: {', '.join(sorted(relevant))})[/]")
    ex = rewritten.explanation
    if ex is None:
        stdout.print("   [yellow]plain search: the index has no latent values (run without --no-latent)[/]")
        return
    for m in ex["entities"] + ex["unmapped"]:
        values = ", ".join(f"{v} ({h})" for v, h in m["how"].items()) or "[dim]none in the index[/]"
        stdout.print(f"   entity [cyan]{m['type']}[/]: “{m['extracted']}” → {values}")
    if not ex["entities"] and not ex["unmapped"]:
        stdout.print("   [dim]no latent entities extracted from the claim[/]")
    ladder = "   ".join(f"{'none' if lv['msm'] is None else 'msm ' + str(lv['msm'])}: {lv['hits']} docs"
                       + (" [bold]←[/]" if lv["msm"] == ex["chosen_msm"] else "") for lv in ex["levels"])
    stdout.print(f"   strictness ladder: {ladder or '(one level)'}")
    stdout.print(f"   chosen: {'no filter' if ex['chosen_msm'] is None else 'msm ' + str(ex['chosen_msm'])} — "
                 f"{ex['reason']}")
    table = Table(title="✓ = evidence", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("dense k-NN")
    table.add_column("rewritten")
    table.add_column("move")
    dense_rank = {h.doc_id: i for i, h in enumerate(dense.hits, 1)}
    for i in range(max(len(dense.hits), len(rewritten.hits))):
        d = dense.hits[i].doc_id if i < len(dense.hits) else ""
        r = rewritten.hits[i].doc_id if i < len(rewritten.hits) else ""
        before = dense_rank.get(r)
        move = "" if not r else ("new" if before is None else ("=" if before == i + 1 else
                                                                f"{before}→{i + 1}"))
        table.add_row(str(i + 1), _mark(d, relevant), _mark(r, relevant), move)
    stdout.print(table)
    for doc in sorted(relevant):
        a = dense_rank.get(doc)
        b = next((i for i, h in enumerate(rewritten.hits, 1) if h.doc_id == doc), None)
        stdout.print(f"   evidence {doc}: dense rank {a or f'>{k}'} → rewritten rank {b or f'>{k}'}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
