"""`search` (questions, through the one search-or-rewriter decision) and `entities` (mention vectors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from latentsearch.cli.options import (
    BackendOpt,
    ConfigOpt,
    FilterOpt,
    FusionOpt,
    IndexOpt,
    JsonOpt,
    UrlOpt,
    WeightsOpt,
    fusion_options,
    settings_from_flags,
    strictness_value,
)
from latentsearch.cli.output import fail, print_explanation, print_hits, run, stderr, stdout


def search(
    query: Annotated[str, typer.Argument(help="The question or query text")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=10_000, help="Number of documents to return")] = 10,
    mode: Annotated[str, typer.Option(help="dense (kNN), bm25, or hybrid (BM25 + kNN fused)")] = "dense",
    strictness: Annotated[str, typer.Option(
        help="Latent-entity filter: auto (strictest level that keeps --min-hits good documents), strict (every "
        "entity), loose (any one), none, an int (that many entities) or a percent such as 60%. Needs an index "
        "with latent types; bm25 mode ignores it")] = "auto",
    min_hits: Annotated[int, typer.Option(min=1, help="auto: documents a strictness level must keep")] = 5,
    fusion: FusionOpt = None,
    weights: WeightsOpt = None,
    filter: FilterOpt = None,
    collapse: Annotated[bool, typer.Option(help="One hit per document (its best chunk)")] = True,
    explain: Annotated[bool, typer.Option("--explain", help="Print extracted entities, mapped values, per-level hit counts, the chosen level and why")] = False,
    show_dsl: Annotated[bool, typer.Option("--show-dsl", help="Print the OpenSearch request body")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search an index. On an index with latent types, dense and hybrid queries are rewritten: the question's
    latent entities become a filter inside the k-NN clause, as strict as the results allow.

    `--json` prints {query, index, mode, total, took_ms, hits[], rewritten, explanation} (the same shape as
    the server's /search).
    """
    from latentsearch.query.retrieval import Retriever, parse_filter
    from latentsearch.query.rewriter import Explanation, shorten_vectors

    if mode not in ("dense", "bm25", "hybrid"):
        fail("--mode must be dense, bm25 or hybrid")
    fusion, pair = fusion_options(fusion, weights)

    def body() -> None:
        from latentsearch.backends import open_backend

        settings = settings_from_flags(config, index, backend, url)
        try:
            spec = parse_filter(filter)
        except ValueError as err:
            fail(str(err))
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):  # before loading any model
            fail(f"index `{settings.index}` does not exist; create it with "
                 f"`latentsearch ingest PATH --index {settings.index}`")
        retriever = Retriever.from_settings(settings, backend=engine)
        found = retriever.search(query, k=k, mode=mode, strictness=strictness_value(strictness),  # type: ignore[arg-type]
                                 min_hits=min_hits, fusion=fusion, weights=pair, filter=spec,  # type: ignore[arg-type]
                                 collapse=collapse,
                                 include_dsl=show_dsl)
        if as_json:
            stdout.print_json(found.model_dump_json(exclude_none=True))
            return
        if explain and found.explanation is not None:
            print_explanation(Explanation.model_validate(found.explanation))
        elif explain:
            stderr.print("[dim]plain search: no latent filter (bm25, strictness none, no collapse, or an index "
                         "without latent types)[/]")
        if show_dsl:
            stdout.print_json(json.dumps(shorten_vectors(found.dsl)))
        print_hits(found)

    run(body)


def entities(
    type_description: Annotated[str, typer.Argument(help='What kind of entity to find, e.g. "dinosaur", "airline"')],
    index: Annotated[str | None, typer.Option("--index", "-i", help="Index name (default: config `index`)")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=10_000, help="Number of documents to return")] = 50,
    inner_hits: Annotated[int, typer.Option(min=1, max=100, help="Matching mentions shown per document")] = 3,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="embedded | opensearch | elasticsearch")]
    = None,
    url: Annotated[str | None, typer.Option("--url", help="Cluster URL")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find documents that mention an entity of a type given in free text (zero-shot).

    The description is embedded like a mention (SmolLM2 mid-layer V vector + trained head) and
    matched by nested k-NN over `mentions.vector` (score_mode max): each document once, with its
    best-matching mentions. The index must have been ingested with mention vectors:
    `LATENTSEARCH_INGEST__MENTIONS=true latentsearch ingest corpus.jsonl --index N`.

    Example:  latentsearch entities "football club" --index news --k 20
    """

    def body() -> None:
        from latentsearch.backends import open_backend
        from latentsearch.models.mention_head import ARTIFACT
        from latentsearch.query.entities import search_entities

        settings = settings_from_flags(config, index, backend, url)
        head = ARTIFACT if settings.models.mention_head == "default" else Path(settings.models.mention_head)
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):
            fail(f"index `{settings.index}` does not exist: ingest with "
                      "`LATENTSEARCH_INGEST__MENTIONS=true latentsearch ingest FILE --index NAME` first")
        result = search_entities(type_description, backend=engine, index=settings.index, k=k, inner_hits=inner_hits,
                                 head_path=head)
        if as_json:
            stdout.print_json(result.model_dump_json())
            return
        table = Table(title=f"“{type_description}” · {len(result.hits)} documents · {result.took_ms:.0f} ms · "
                            f"{result.index}")
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("doc")
        table.add_column("mentions")
        table.add_column("text")
        for rank, hit in enumerate(result.hits, 1):
            ms = ", ".join(f"{m.text} ({m.score:.3f})" for m in hit.mentions)
            table.add_row(str(rank), f"{hit.score:.4f}", hit.id, ms, hit.text[:120] + ("…" if len(hit.text) > 120 else ""))
        stdout.print(table)
        if not result.hits:
            stderr.print("no document has mention vectors: was the index ingested with "
                              "LATENTSEARCH_INGEST__MENTIONS=true?")

    run(body)


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(entities)
