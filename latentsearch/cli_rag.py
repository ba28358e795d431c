"""CLI for answers with citations: `latentsearch ask` and `latentsearch eval rag`. Registered by
cli.py via `register(app, eval_app)` so this file evolves without touching the shared CLI module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable format) on stdout")]
IndexOpt = Annotated[str | None, typer.Option("--index", "-i", help="Index name (default: config `index`)")]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="embedded | opensearch | elasticsearch")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Cluster URL, e.g. https://localhost:9200")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file", exists=True,
                                                dir_okay=False)]
StrictnessOpt = Annotated[str, typer.Option(
    help="Latent filter strictness: auto (strictest level that keeps enough good documents), strict (every "
         "query entity), loose (any one), none (no latent filter), an int (that many entities) or a percent ('60%')")]
LlmUrlOpt = Annotated[str | None, typer.Option(
    "--llm-url", help="OpenAI-compatible API root (e.g. the model server's http://localhost:8000/v1); "
                      "default: config rag.base_url, else the local SmolLM2")]
LlmModelOpt = Annotated[str | None, typer.Option("--llm-model", help="Model name (endpoint) or folder (local)")]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Answer length cap (default rag.max_new_tokens)")]


def _cli():
    from latentsearch import cli

    return cli


def _rag_settings(config: Path | None, index: str | None, backend: str | None, url: str | None,
                  llm_url: str | None, llm_model: str | None, max_tokens: int | None, k: int | None):
    settings = _cli()._settings(config, index, backend, url)
    updates: dict[str, Any] = {}
    for key, value in (("base_url", llm_url), ("model", llm_model), ("max_new_tokens", max_tokens), ("k", k)):
        if value is not None:
            updates[key] = value
    if updates:
        settings.rag = settings.rag.model_validate({**settings.rag.model_dump(), **updates})
    return settings


def _strictness(value: str) -> str | int:
    return int(value) if value.strip().lstrip("-").isdigit() else value


def build_rewriter(settings: Any, backend: Any, embedder: Any, latent: bool) -> Any | None:
    """The query rewriter, with the LentEx extractor when the index's schema lists latent types."""
    from latentsearch.mappings import schema_from_mapping
    from latentsearch.query.retrieval import make_rewriter

    extractor = None
    schema = schema_from_mapping(backend.get_mapping(settings.index)) if backend.index_exists(settings.index) else None
    if latent and schema is not None and schema.latent_types:
        from latentsearch.models.extractor import get_extractor

        m = settings.models
        extractor = get_extractor(m.llm, m.extractor_adapter, m.device)
    return make_rewriter(backend, settings.index, embedder, extractor)


def ask(
    question: Annotated[str, typer.Argument(help="The question, in natural language")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=50, help="Context passages (default rag.k = 4)")] = None,
    strictness: StrictnessOpt = "auto",
    mode: Annotated[str, typer.Option(help="dense (k-NN) or hybrid (k-NN + BM25)")] = "dense",
    latent: Annotated[bool, typer.Option(help="Filter on the question's latent entities (the rewriter)")] = True,
    filter: Annotated[str | None, typer.Option(
        "--filter", help='Metadata filter as JSON: {"year": 2020} or any OpenSearch DSL clause')] = None,
    llm_url: LlmUrlOpt = None,
    llm_model: LlmModelOpt = None,
    max_tokens: MaxTokensOpt = None,
    show_passages: Annotated[bool, typer.Option("--passages", help="Print the context passages too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the index, citing the documents used.

    Retrieves with the query rewriter (latent-entity filters, adaptive strictness), numbers the passages
    by document id in a grounded prompt, answers with the local SmolLM2 (or --llm-url), and keeps only
    citations that point at retrieved passages. When the passages do not hold the answer it says
    NOT IN CONTEXT and `supported` is false. --json prints the Answer (question, text, citations,
    supported, retrieved, citation_source, passages, explanation, model, took_ms).
    """
    cli = _cli()

    def body() -> None:
        from latentsearch.backends import open_backend
        from latentsearch.models.embedder import get_embedder
        from latentsearch.query.rag import ask as run_ask

        if mode not in ("dense", "hybrid"):
            raise typer.BadParameter("--mode must be dense or hybrid")
        settings = _rag_settings(config, index, backend, url, llm_url, llm_model, max_tokens, k)
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):
            cli._fail(f"index `{settings.index}` does not exist; create it with "
                      f"`latentsearch ingest PATH --index {settings.index}`")
        embedder = get_embedder(settings.models.embedder, settings.models.device)
        rewriter = build_rewriter(settings, engine, embedder, latent)
        user_filter = json.loads(filter) if filter else None
        try:
            answer = run_ask(question, settings, backend=engine, embedder=embedder, rewriter=rewriter,
                             strictness=_strictness(strictness), search_type=mode, filter=user_filter)
        except RuntimeError as err:  # the LLM endpoint failed (unreachable, 4xx/5xx, wrong format)
            cli._fail(str(err))
        if as_json:
            cli.out.print_json(answer.model_dump_json())
            return
        cli.out.print(answer.text)
        cite = ", ".join(answer.citations) if answer.citations else "none"
        cli.out.print(f"[dim]citations: {cite} ({answer.citation_source}); supported: {answer.supported}; "
                      f"retrieved: {', '.join(answer.retrieved)}; {answer.model}, {answer.took_ms:.0f} ms[/]")
        if answer.explanation:
            cli.out.print(f"[dim]retrieval: {answer.explanation.get('reason')}[/]")
        if show_passages:
            for p in answer.passages:
                cli.out.print(f"[bold][{p.n}] doc {p.doc_id}[/] {p.title or ''}\n{p.text[:400]}")

    cli._run(body)


def eval_rag(
    queries: Annotated[Path, typer.Option("--queries", help="Queries JSONL (_id, text[, relevant])", exists=True)],
    qrels: Annotated[Path | None, typer.Option("--qrels", help="BEIR qrels TSV (query-id, corpus-id, score); "
                                               "omit when each query line lists `relevant`", exists=True)] = None,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    limit: Annotated[int | None, typer.Option(help="The first N judged queries (the issue: 100)")] = 100,
    variants: Annotated[str, typer.Option(help="Comma-separated: dense (no latent filter), rewriter")] = "dense,rewriter",
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=50, help="Context passages (default rag.k)")] = None,
    strictness: StrictnessOpt = "auto",
    llm_url: LlmUrlOpt = None,
    llm_model: LlmModelOpt = None,
    max_tokens: MaxTokensOpt = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Also save the JSON report (with per-question rows); rows also stream to <out>.rows.jsonl")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer support rate: does the answer cite a document the qrels call relevant? Dense-only vs rewriter.

    Each judged query is answered with the same LLM and prompt from each variant's retrieval. Reports
    support_rate (cites a relevant document), grounded_rate (cites anything), citation_precision,
    context_hit_rate (a relevant document was in the context: the ceiling), not_in_context_rate and
    seconds per question. SmolLM2 on 2 CPU cores takes seconds to minutes per answer: start with --limit 10.
    """
    cli = _cli()

    def body() -> None:
        from latentsearch.backends import open_backend
        from latentsearch.models.embedder import get_embedder
        from latentsearch.query.eval_rag import evaluate_rag, load_judged_queries
        from latentsearch.query.rag import llm_from_settings

        settings = _rag_settings(config, index, backend, url, llm_url, llm_model, max_tokens, k)
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):
            cli._fail(f"index `{settings.index}` does not exist")
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
        embedder = get_embedder(settings.models.embedder, settings.models.device)
        rewriter = build_rewriter(settings, engine, embedder, latent=True) if "rewriter" in chosen else None
        judged = load_judged_queries(queries, qrels, limit)
        rows_path = out_file.with_suffix(".rows.jsonl") if out_file else None
        if rows_path:
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            rows_path.write_text("", encoding="utf-8")

        def keep(row: Any) -> None:
            if rows_path:
                with rows_path.open("a", encoding="utf-8") as fh:
                    fh.write(row.model_dump_json() + "\n")
        report = evaluate_rag(backend=engine, index=settings.index, embedder=embedder,
                              llm=llm_from_settings(settings), queries=judged, rewriter=rewriter, variants=chosen,
                              k=settings.rag.k, strictness=_strictness(strictness), config=settings.rag,
                              queries_path=str(queries),
                              progress=None if as_json else (lambda msg: cli.console.print(f"[dim]{msg}[/]")),
                              on_row=keep)
        if out_file:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if as_json:
            cli.out.print_json(report.model_dump_json(exclude={"rows"}))
            return
        table = Table(title=f"RAG on `{report.index}`: {report.questions} questions, {report.model}, k={report.k}")
        cols = ["variant", "support_rate", "grounded_rate", "citation_precision", "context_hit_rate",
                "not_in_context_rate", "mean_seconds", "latent_filtered"]
        for c in cols:
            table.add_column(c.replace("_", " "), justify="left" if c == "variant" else "right")
        for r in report.results:
            d = r.model_dump()
            table.add_row(*(str(d[c]) if d[c] is not None else "-" for c in cols))
        cli.out.print(table)

    cli._run(body)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("ask")(ask)
    eval_app.command("rag")(eval_rag)
