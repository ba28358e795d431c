"""CLI for per-mention type-aware vectors (NER Retriever): `entities`, `train mention-head`,
`eval layer-sweep`, `eval entity-retrieval`, `data typed-mentions`. Registered by cli.py via
`register(...)` so this file evolves without touching the shared CLI module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

WNUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wnut17"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable format) on stdout")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars")]


def _cli():
    from latentsearch import cli

    return cli


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
    cli = _cli()

    def body() -> None:
        from latentsearch.backends import open_backend
        from latentsearch.models.mention_head import ARTIFACT
        from latentsearch.query.entities import search_entities

        settings = cli._settings(config, index, backend, url)
        head = ARTIFACT if settings.models.mention_head == "default" else Path(settings.models.mention_head)
        engine = open_backend(settings.backend)
        if not engine.index_exists(settings.index):
            cli._fail(f"index `{settings.index}` does not exist: ingest with "
                      "`LATENTSEARCH_INGEST__MENTIONS=true latentsearch ingest FILE --index NAME` first")
        result = search_entities(type_description, backend=engine, index=settings.index, k=k, inner_hits=inner_hits,
                                 head_path=head)
        if as_json:
            cli.out.print_json(result.model_dump_json())
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
        cli.out.print(table)
        if not result.hits:
            cli.console.print("no document has mention vectors: was the index ingested with "
                              "LATENTSEARCH_INGEST__MENTIONS=true?")

    cli._run(body)


def train_mention_head(
    layer: Annotated[int | None, typer.Option(help="Block whose v_proj is read; default: best v_proj block of "
                                                   "models/artifacts/mention-head-smollm2/layer_sweep.json")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training mentions")] = 40,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    margin: Annotated[float, typer.Option(help="Triplet margin on cosine distance")] = 0.3,
    heldout_every: Annotated[int, typer.Option(help="Hold out every n-th synthetic type for a zero-shot check "
                                                    "(0 = train on all)")] = 10,
    out_dir: Annotated[Path | None, typer.Option(help="Where head.safetensors + config.json go")] = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Train the mention projection head (Linear(d_v,500)-SiLU-Dropout(0.1)-Linear(500,500), triplet loss).

    Data: WNUT-17 train (6 types) + the synthetic fine-grained set models/data/typed_mentions (184 types);
    validation: WNUT-17 dev (the best epoch by mention-level macro R-Precision is kept). The frozen
    LLM's vectors are computed once and cached under $LATENTSEARCH_HOME/cache/mention-vectors.
    """
    cli = _cli()

    def body() -> None:
        from latentsearch.models.mention_head import ARTIFACT, TrainConfig, train_head

        chosen = layer
        if chosen is None:
            sweep = ARTIFACT / "layer_sweep.json"
            if not sweep.is_file():
                cli._fail("no layer given and no layer sweep found: run `latentsearch eval layer-sweep` or pass --layer")
            chosen = int(json.loads(sweep.read_text())["best"]["v_proj"])
        cfg = TrainConfig(layer=chosen, epochs=epochs, batch_size=batch_size, lr=lr, margin=margin,
                          heldout_every=heldout_every, out_dir=out_dir or ARTIFACT)
        report = train_head(cfg, progress=progress)
        if as_json:
            cli.out.print_json(report.model_dump_json())
            return
        dev_head = sum(report.dev_r_precision_head.values()) / len(report.dev_r_precision_head)
        dev_raw = sum(report.dev_r_precision_raw.values()) / len(report.dev_r_precision_raw)
        cli.out.print(f"head saved to {cfg.out_dir} (layer {chosen}, best epoch {report.best_epoch}, "
                      f"{report.train_seconds:.0f} s training)")
        cli.out.print(f"WNUT-17 dev mention-level macro R-Precision: head {dev_head:.3f} vs raw V {dev_raw:.3f}")
        if report.heldout_r_precision_head is not None:
            cli.out.print(f"held-out synthetic types ({len(report.heldout_types)}): head "
                          f"{report.heldout_r_precision_head:.3f} vs raw V {report.heldout_r_precision_raw:.3f}")

    cli._run(body)


def layer_sweep(
    conll: Annotated[Path, typer.Option(help="CoNLL file with gold typed spans", exists=True, dir_okay=False)]
    = WNUT / "wnut17train.conll",
    sentences: Annotated[int, typer.Option(min=10, help="Sentences sampled (those with mentions)")] = 300,
    out_dir: Annotated[Path | None, typer.Option(help="Where layer_sweep.{json,md,png} go")] = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """AUC of same-type vs different-type mention pairs (cosine of raw vectors) for every block ×
    {k_proj, v_proj, block output}; writes a heatmap PNG and a markdown table."""
    cli = _cli()

    def body() -> None:
        from latentsearch.models.layer_sweep import run_sweep
        from latentsearch.models.mention_head import ARTIFACT

        report = run_sweep(conll, out_dir or ARTIFACT, n_sentences=sentences, progress=progress)
        if as_json:
            cli.out.print_json(report.model_dump_json())
            return
        for site, best in report.best.items():
            cli.out.print(f"{site}: best block {best} (AUC {report.auc[site][best]:.3f})")
        cli.out.print(f"{report.mentions} mentions, {report.seconds:.0f} s; table and heatmap in {out_dir or ARTIFACT}")

    cli._run(body)


def entity_retrieval(
    conll: Annotated[Path, typer.Option(help="CoNLL file: one document per sentence, gold types as queries",
                                        exists=True, dir_okay=False)] = WNUT / "emerging.dev.conll",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N sentences")] = None,
    save: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file")] = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """R-Precision per gold type and macro for ours, ours without head, ours with gold spans, BM25
    and MiniLM sentence vectors, plus bytes stored per vector (fresh temporary embedded index)."""
    cli = _cli()

    def body() -> None:
        from latentsearch.models.eval_entity_retrieval import evaluate

        report = evaluate(conll, limit=limit, progress=progress)
        if save:
            save.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            cli.out.print_json(report.model_dump_json())
            return
        names = list(report.relevant)
        table = Table(title=f"R-Precision, {report.documents} sentences of {Path(report.conll).name}")
        table.add_column("system")
        for n in names:
            table.add_column(f"{n} (R={report.relevant[n]})", justify="right")
        table.add_column("macro", justify="right")
        for row in report.systems:
            table.add_row(row.system, *[f"{row.r_precision[n]:.3f}" for n in names], f"{row.macro:.3f}")
        cli.out.print(table)
        for s in report.storage:
            cli.out.print(f"{s.system}: {s.vectors} vectors × {s.bytes_per_vector} B = {s.total_bytes / 1e6:.2f} MB")
        cli.out.print(f"ours / best baseline = {report.ours_vs_best_baseline:.2f}")

    cli._run(body)


def typed_mentions_data() -> None:
    """Rebuild models/data/typed_mentions/typed_mentions.jsonl from the hand-written entities.tsv."""
    from latentsearch.models import typed_mentions

    rows = typed_mentions.build()
    path = typed_mentions.write(rows)
    _cli().out.print(f"{len(rows)} sentences, {len({r.type for r in rows})} types -> {path}")


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer, data_app: typer.Typer) -> None:
    app.command("entities")(entities)
    train_app.command("mention-head")(train_mention_head)
    eval_app.command("layer-sweep")(layer_sweep)
    eval_app.command("entity-retrieval")(entity_retrieval)
    data_app.command("typed-mentions")(typed_mentions_data)
