"""`ask`: answers with citations from the index (RAG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from latentsearch.cli.options import (
    BackendOpt,
    ConfigOpt,
    FilterOpt,
    FusionOpt,
    IndexOpt,
    JsonOpt,
    LlmModelOpt,
    LlmUrlOpt,
    MaxTokensOpt,
    StrictnessOpt,
    UrlOpt,
    WeightsOpt,
    fusion_options,
    settings_from_flags,
    strictness_value,
)
from latentsearch.cli.output import fail, run, stdout


def rag_settings(config: Path | None, index: str | None, backend: str | None, url: str | None,
                  llm_url: str | None, llm_model: str | None, max_tokens: int | None, k: int | None):
    settings = settings_from_flags(config, index, backend, url)
    updates: dict[str, Any] = {}
    for key, value in (("base_url", llm_url), ("model", llm_model), ("max_new_tokens", max_tokens), ("k", k)):
        if value is not None:
            updates[key] = value
    if updates:
        settings.rag = settings.rag.model_validate({**settings.rag.model_dump(), **updates})
    return settings


def ask(
    question: Annotated[str, typer.Argument(help="The question, in natural language")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=50, help="Context passages (default rag.k = 4)")] = None,
    strictness: StrictnessOpt = "auto",
    mode: Annotated[str, typer.Option(help="dense (k-NN) or hybrid (k-NN + BM25)")] = "dense",
    fusion: FusionOpt = None,
    weights: WeightsOpt = None,
    latent: Annotated[bool, typer.Option(help="Filter on the question's latent entities (the rewriter)")] = True,
    filter: FilterOpt = None,
    llm_url: LlmUrlOpt = None,
    llm_model: LlmModelOpt = None,
    max_tokens: MaxTokensOpt = None,
    show_passages: Annotated[bool, typer.Option("--passages", help="Print the context passages too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the index, citing the documents used.

    Retrieves like `search` (the query rewriter's latent-entity filters on an index with latent types), numbers the passages
    by document id in a grounded prompt, answers with the local SmolLM2 (or --llm-url), and keeps only
    citations that point at retrieved passages. When the passages do not hold the answer it says
    NOT IN CONTEXT and `supported` is false. --json prints the Answer (question, text, citations,
    supported, retrieved, citation_source, passages, explanation, model, took_ms).
    """

    def body() -> None:
        from latentsearch.query.rag import ask as run_ask
        from latentsearch.query.retrieval import Retriever, parse_filter

        if mode not in ("dense", "hybrid"):
            raise typer.BadParameter("--mode must be dense or hybrid")
        chosen_fusion, pair = fusion_options(fusion, weights)
        settings = rag_settings(config, index, backend, url, llm_url, llm_model, max_tokens, k)
        retriever = Retriever.from_settings(settings, latent=latent)
        if not retriever.backend.index_exists(settings.index):
            fail(f"index `{settings.index}` does not exist; create it with "
                      f"`latentsearch ingest PATH --index {settings.index}`")
        try:
            user_filter = parse_filter(filter)
        except ValueError as err:
            fail(str(err))
        try:
            answer = run_ask(question, settings, retriever=retriever, strictness=strictness_value(strictness),
                             search_type=mode, filter=user_filter, fusion=chosen_fusion, weights=pair)
        except RuntimeError as err:  # the LLM endpoint failed (unreachable, 4xx/5xx, wrong format)
            fail(str(err))
        if as_json:
            stdout.print_json(answer.model_dump_json())
            return
        stdout.print(answer.text)
        cite = ", ".join(answer.citations) if answer.citations else "none"
        stdout.print(f"[dim]citations: {cite} ({answer.citation_source}); supported: {answer.supported}; "
                      f"retrieved: {', '.join(answer.retrieved)}; {answer.model}, {answer.took_ms:.0f} ms[/]")
        if answer.explanation:
            stdout.print(f"[dim]retrieval: {answer.explanation.get('reason')}[/]")
        if show_passages:
            for p in answer.passages:
                stdout.print(f"[bold][{p.n}] doc {p.doc_id}[/] {p.title or ''}\n{p.text[:400]}")

    run(body)


def register(app: typer.Typer) -> None:
    app.command()(ask)
