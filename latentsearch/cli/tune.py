"""`tune strictness`: fit the latent policy of one index on judged queries and store it with the index."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from latentsearch.cli.options import BackendOpt, ConfigOpt, IndexOpt, JsonOpt, UrlOpt, settings_from_flags
from latentsearch.cli.output import fail, run, stderr, stdout


def strictness(
    queries: Annotated[Path, typer.Option("--queries", help="BEIR queries JSONL (_id, text)", exists=True)],
    qrels: Annotated[Path, typer.Option("--qrels", help="BEIR qrels TSV (query-id, corpus-id, score)", exists=True)],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    mode: Annotated[str, typer.Option(help="The unfiltered ranking the policy builds on: hybrid or dense")] = "hybrid",
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds over the queries")] = 5,
    seed: Annotated[int, typer.Option(help="Fold assignment seed (the fit is deterministic for a seed)")] = 13,
    limit: Annotated[int | None, typer.Option(help="Use the first N judged queries")] = None,
    save: Annotated[bool, typer.Option("--save/--dry-run", help="Store the fitted policy with the index")] = True,
    work: Annotated[Path | None, typer.Option(help="Keep the collected study here and reuse it on the next run "
                                              "(default: a temporary folder)")]
        = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit how questions use latent entities on this index: which types, free or chosen question values, their
    confidence floor, and how much the filtered list weighs when fused with the unfiltered one (or no latent
    filter at all, when nothing beats it). Cross-validated on nDCG@10 over judged queries, so the stored policy is
    the one that held up on queries it was not fitted on; `search`/`ask`/the server use it by default on this index.
    Use training queries only: never the queries you will report test figures on."""
    from latentsearch.backends import open_backend
    from latentsearch.lab.eval_retrieval import load_qrels, load_queries
    from latentsearch.lab.tune_policy import tune
    from latentsearch.mappings import schema_from_mapping
    from latentsearch.models.factory import extractor_from_settings, get_embedder
    from latentsearch.query.policy import save_policy

    def body() -> None:
        if mode not in ("hybrid", "dense"):
            fail(f"--mode must be hybrid or dense, not {mode!r}")
        settings = settings_from_flags(config, index, backend, url)
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):
            fail(f"index `{settings.index}` does not exist; ingest it first (latentsearch ingest PATH --index ...)")
        schema = schema_from_mapping(engine.get_mapping(settings.index))
        if schema is None or not schema.latent_types:
            fail(f"index `{settings.index}` has no latent types: there is nothing to tune (ingest with --latent-types)")
        judged = load_qrels(qrels)
        chosen = load_queries(queries, limit=limit, with_qrels=set(judged))
        if len(chosen) < folds * 2:
            fail(f"{len(chosen)} judged queries are too few for {folds}-fold cross-validation")
        embedder = get_embedder(settings.models.embedder, settings.models.device)
        extractor = extractor_from_settings(settings.models, questions=True)
        with tempfile.TemporaryDirectory() as tmp:
            report = tune(engine, settings.index, embedder, extractor, chosen, judged, work or Path(tmp),
                          folds=folds, seed=seed, base=mode, progress=not as_json, schema=schema)
        if save:
            save_policy(engine, settings.index, report.chosen)
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        table = Table(title=f"latent policy for `{report.index}`: {report.queries} queries, {folds}-fold CV")
        for col in ("", "nDCG@10", "Recall@100", "P@10", "R@10", "F1@10", "filter fired", "relevant kept"):
            table.add_column(col)
        for name, m in ((f"{mode}, no latent filter", report.baseline), ("fitted policy, held out", report.held_out),
                        ("chosen policy, all queries", report.chosen_on_all)):
            kept = m.get("relevant_kept", float("nan"))
            table.add_row(name, *(f"{m[k]:.4f}" for k in ("ndcg@10", "recall@100", "p@10", "r@10", "f1@10")),
                          f"{m.get('fired', 0):.0%}", "-" if kept != kept else f"{kept:.0%}")
        stdout.print(table)
        stdout.print("chosen: " + report.chosen.model_dump_json(exclude={"fitted"}))
        stderr.print("stored with the index: search, ask and the server use it there by default" if save else
                     "dry run: nothing stored")

    run(body)


app = typer.Typer(help="Fit search behaviour to a corpus from judged queries.", no_args_is_help=True)
app.command("strictness")(strictness)
