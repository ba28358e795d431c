"""`eval ...`: models and retrieval measured on real and synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from latentsearch.cli.options import (
    BackendOpt,
    ConfigOpt,
    IndexOpt,
    JsonOpt,
    LlmModelOpt,
    LlmUrlOpt,
    MaxTokensOpt,
    ProgressOpt,
    StrictnessOpt,
    UrlOpt,
    WnutOpt,
    settings_from_flags,
    strictness_value,
    wnut_file,
)
from latentsearch.cli.output import fail, run, stderr, stdout


def extraction(
    methods: Annotated[str, typer.Option(help="Comma-separated: nearest-label, base, lentex")] = "nearest-label,base,lentex",
    adapter: Annotated[str, typer.Option(help="LoRA adapter folder (default: the shipped one)")] = "default",
    limit: Annotated[int | None, typer.Option(help="Sample N examples per test split")] = None,
    similarity_model: Annotated[str, typer.Option(help="Similarity model (the paper: all-mpnet-base-v2)")] = "all-mpnet-base-v2",
    as_json: JsonOpt = False,
) -> None:
    """Mean semantic similarity of predictions vs references on seen and unseen domains (the LentEx metric)."""
    from latentsearch.lab.eval_extraction import evaluate, table

    def body() -> None:
        report = evaluate(methods=[m.strip() for m in methods.split(",") if m.strip()], adapter=adapter,
                          limit=limit, similarity_model=similarity_model,
                          progress=None if as_json else (lambda msg: stderr.print(f"[dim]{msg}[/]")))
        if as_json:
            stdout.print_json(report.model_dump_json())
        else:
            stdout.print(table(report))

    run(body)


def clustering(
    jsonl: Annotated[Path, typer.Option("--jsonl", help="Labelled JSONL (optionally .gz)", exists=True)],
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    label_field: Annotated[str, typer.Option("--label-field")] = "label",
    n: Annotated[int, typer.Option(help="Stratified sample size")] = 2000,
    text_type: Annotated[str, typer.Option()] = "newsgroup post",
    latent_entity_type: Annotated[str, typer.Option()] = "discussion topic",
    adapter: Annotated[str, typer.Option(help="LoRA adapter folder, `default`, or `none` (base model)")] = "default",
    fit_n: Annotated[int, typer.Option("--fit-n", min=0, help="Also a weighted concatenation, the latent part's "
                                       "weight fitted on this many other posts (0: off)")] = 500,
    bf16: Annotated[bool, typer.Option("--bf16", help="Extract with bfloat16 packed Linear layers (AMX CPUs)")] = False,
    vocabulary: Annotated[bool, typer.Option(
        "--vocabulary/--no-vocabulary", help="Also the latent rows with each value read as its vocabulary concept "
        "(the vocabulary built from every extracted value, as ingest does for an index)")] = True,
    as_json: JsonOpt = False,
) -> None:
    """V-measure (MiniBatchKMeans, k = labels) of MiniLM(text), MiniLM(latent entities), their concatenation, and
    (with --fit-n) the concatenation with the latent weight fitted on a disjoint sample; with --vocabulary the
    latent rows again over vocabulary concepts."""
    from latentsearch.lab.eval_clustering import evaluate

    def body() -> None:
        report = evaluate(jsonl, text_field=text_field, label_field=label_field, n=n, text_type=text_type,
                          latent_entity_type=latent_entity_type, adapter=adapter, fit_n=fit_n, bf16=bf16,
                          vocabulary=vocabulary)
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        concepts = f", {report.distinct_values} values in {report.concepts} concepts" if report.concepts else ""
        table = Table(title=f"clustering: {report.documents} docs, {report.labels} labels "
                            f"(extraction {report.extraction_seconds:.0f} s{concepts})")
        table.add_column("representation")
        table.add_column("V-measure", justify="right")
        for row in report.rows:
            table.add_row(row.representation, f"{100 * row.v_measure:.2f} ± {100 * row.v_measure_std:.2f}")
        stdout.print(table)

    run(body)


def retrieval(
    queries: Annotated[Path, typer.Option("--queries", help="BEIR queries JSONL (_id, text)", exists=True)],
    qrels: Annotated[Path, typer.Option("--qrels", help="BEIR qrels TSV (query-id, corpus-id, score)", exists=True)],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    variants: Annotated[str, typer.Option(help="Comma-separated: bm25, dense, hybrid, dense+latent:auto, "
                                                "dense+latent:strict, hybrid+latent:auto (any strictness after latent:)")] =
        ",".join(("bm25", "dense", "hybrid", "dense+latent:auto", "dense+latent:strict", "hybrid+latent:auto")),
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N judged queries")] = None,
    min_hits: Annotated[int, typer.Option(min=1, help="auto strictness: documents a level must keep")] = 5,
    floor_rank: Annotated[int, typer.Option(min=1, help="auto strictness: the floor is the unfiltered score at this rank")] = 20,
    run_dir: Annotated[Path | None, typer.Option(help="Write one TREC run file per variant here")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also save the JSON report here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10, P@10, R@10, F1@10, Recall@100, MRR@10 and latency p50/p95 per variant, document level
    (chunks collapse to their best-scoring document), plus how the latent filter behaved."""
    from latentsearch.backends import open_backend
    from latentsearch.lab.eval_retrieval import evaluate_retrieval
    from latentsearch.models.factory import get_embedder
    from latentsearch.query.retrieval import question_store

    def body() -> None:
        settings = settings_from_flags(config, index, backend, url)
        engine = open_backend(settings.backend)
        embedder = get_embedder(settings.models.embedder, settings.models.device)
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
        extractor = None
        if any("+latent:" in v for v in chosen):
            from latentsearch.models.factory import extractor_from_settings

            extractor = extractor_from_settings(settings.models, questions=True)  # as configured for questions
        report = evaluate_retrieval(
            backend=engine, index=settings.index, embedder=embedder, extractor=extractor, queries_path=queries,
            qrels_path=qrels, variants=chosen, limit=limit, run_dir=run_dir, progress=not as_json,
            rewrite_options={"min_hits": min_hits, "floor_rank": floor_rank}, store=question_store(settings),
        )
        if out_file:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        table = Table(title=f"retrieval on `{report.index}`: {report.queries} queries, document level")
        names = list(report.results[0].metrics) if report.results else []
        for col in ["variant", *names, "p50 ms", "p95 ms"]:
            table.add_column(col, justify="left" if col == "variant" else "right")
        for r in report.results:
            table.add_row(r.variant, *(f"{r.metrics[n]:.4f}" for n in names), f"{r.latency_ms['p50']:.0f}",
                          f"{r.latency_ms['p95']:.0f}")
        stdout.print(table)
        for d in report.diagnostics:
            stdout.print(f"{d.variant}: filtered {100 * d.filtered_share:.0f}% of queries, levels {d.chosen_levels}, "
                      f"relevant docs kept by the filter {d.relevant_kept}, mean entities {d.mean_entities}")

    run(body)


def rag(
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

    def body() -> None:
        from latentsearch.cli.ask import rag_settings
        from latentsearch.lab.eval_rag import evaluate_rag, load_judged_queries
        from latentsearch.query.rag import llm_from_settings
        from latentsearch.query.retrieval import Retriever

        settings = rag_settings(config, index, backend, url, llm_url, llm_model, max_tokens, k)
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
        retriever = Retriever.from_settings(settings, latent="rewriter" in chosen)
        if not retriever.backend.index_exists(settings.index):
            fail(f"index `{settings.index}` does not exist")
        judged = load_judged_queries(queries, qrels, limit)
        rows_path = out_file.with_suffix(".rows.jsonl") if out_file else None
        if rows_path:
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            rows_path.write_text("", encoding="utf-8")

        def keep(row: Any) -> None:
            if rows_path:
                with rows_path.open("a", encoding="utf-8") as fh:
                    fh.write(row.model_dump_json() + "\n")
        report = evaluate_rag(retriever=retriever, llm=llm_from_settings(settings), queries=judged, variants=chosen,
                              k=settings.rag.k, strictness=strictness_value(strictness), config=settings.rag,
                              queries_path=str(queries),
                              progress=None if as_json else (lambda msg: stderr.print(f"[dim]{msg}[/]")),
                              on_row=keep)
        if out_file:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if as_json:
            stdout.print_json(report.model_dump_json(exclude={"rows"}))
            return
        table = Table(title=f"RAG on `{report.index}`: {report.questions} questions, {report.model}, k={report.k}")
        cols = ["variant", "support_rate", "grounded_rate", "citation_precision", "context_hit_rate",
                "not_in_context_rate", "mean_seconds", "latent_filtered"]
        for c in cols:
            table.add_column(c.replace("_", " "), justify="left" if c == "variant" else "right")
        for r in report.results:
            d = r.model_dump()
            table.add_row(*(str(d[c]) if d[c] is not None else "-" for c in cols))
        stdout.print(table)

    run(body)


def layer_sweep(
    conll: Annotated[Path | None, typer.Option(help="CoNLL file with gold typed spans (default: WNUT-17 train)",
                                               exists=True, dir_okay=False)] = None,
    wnut: WnutOpt = None,
    sentences: Annotated[int, typer.Option(min=10, help="Sentences sampled (those with mentions)")] = 300,
    out_dir: Annotated[Path | None, typer.Option(help="Where layer_sweep.{json,md,png} go")] = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """AUC of same-type vs different-type mention pairs (cosine of raw vectors) for every block ×
    {k_proj, v_proj, block output}; writes a heatmap PNG and a markdown table."""

    def body() -> None:
        from latentsearch.lab.layer_sweep import run_sweep
        from latentsearch.models.mention_head import ARTIFACT

        report = run_sweep(conll or wnut_file(wnut, "wnut17train.conll"), out_dir or ARTIFACT, n_sentences=sentences, progress=progress)
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        for site, best in report.best.items():
            stdout.print(f"{site}: best block {best} (AUC {report.auc[site][best]:.3f})")
        stdout.print(f"{report.mentions} mentions, {report.seconds:.0f} s; table and heatmap in {out_dir or ARTIFACT}")

    run(body)


def entity_retrieval(
    conll: Annotated[Path | None, typer.Option(help="CoNLL file: one document per sentence, gold types as queries "
                                               "(default: WNUT-17 dev)", exists=True, dir_okay=False)] = None,
    wnut: WnutOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N sentences")] = None,
    save: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file")] = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """R-Precision per gold type and macro for ours, ours without head, ours with gold spans, BM25
    and MiniLM sentence vectors, plus bytes stored per vector (fresh temporary embedded index)."""

    def body() -> None:
        from latentsearch.lab.eval_entity_retrieval import evaluate

        report = evaluate(conll or wnut_file(wnut, "emerging.dev.conll"), limit=limit, progress=progress)
        if save:
            save.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        names = list(report.relevant)
        table = Table(title=f"R-Precision, {report.documents} sentences of {Path(report.conll).name}")
        table.add_column("system")
        for n in names:
            table.add_column(f"{n} (R={report.relevant[n]})", justify="right")
        table.add_column("macro", justify="right")
        for row in report.systems:
            table.add_row(row.system, *[f"{row.r_precision[n]:.3f}" for n in names], f"{row.macro:.3f}")
        stdout.print(table)
        for s in report.storage:
            stdout.print(f"{s.system}: {s.vectors} vectors × {s.bytes_per_vector} B = {s.total_bytes / 1e6:.2f} MB")
        stdout.print(f"ours / best baseline = {report.ours_vs_best_baseline:.2f}")

    run(body)


def linking(
    data: Annotated[Path | None, typer.Option(help="Folder with kb.jsonl + docs.jsonl (default: latentsearch/lab/data/linking)")]
    = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N documents")] = None,
    save: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """InKB micro-F1 (gold mentions given), share of mentions sent to the LLM, and seconds per document
    with the retriever shortcut vs without it (every mention to the trie-constrained LLM over
    alias + dense top-5 candidates); speed-up = without / with. Set: WNUT-17 dev, see its DATA_CARD.md."""

    def body() -> None:
        from latentsearch.lab.eval_linking import DATA, evaluate

        settings = settings_from_flags(config, None, None, None)
        report = evaluate(data or DATA, llm=settings.models.llm, device=settings.models.device, limit=limit)
        if save:
            save.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        table = Table(title=f"linking: {report.documents} docs, {report.mentions} mentions "
                            f"({report.ambiguous_mentions} ambiguous), KB {report.kb_entities}")
        for col in ("arm", "P", "R", "micro-F1", "LLM share", "ambiguous acc.", "s/doc"):
            table.add_column(col)
        for arm in (report.with_shortcut, report.without_shortcut):
            acc = "-" if arm.ambiguous_accuracy is None else f"{arm.ambiguous_accuracy:.3f}"
            table.add_row("shortcut" if arm.shortcut else "no shortcut", f"{arm.precision:.3f}", f"{arm.recall:.3f}",
                          f"{arm.micro_f1:.3f}", f"{arm.llm_share:.1%}", acc, f"{arm.seconds_per_doc:.3f}")
        stdout.print(table)
        stdout.print(f"speed-up {report.speedup:.2f}x; first-alias-candidate baseline F1 {report.first_candidate_f1:.3f}")

    run(body)


app = typer.Typer(help="Evaluate models and retrieval on real and synthetic data.", no_args_is_help=True)
app.command("extraction")(extraction)
app.command("clustering")(clustering)
app.command("retrieval")(retrieval)
app.command("rag")(rag)
app.command("layer-sweep")(layer_sweep)
app.command("entity-retrieval")(entity_retrieval)
app.command("linking")(linking)
