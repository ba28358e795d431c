"""CLI for entity linking (INSGENEL-R): `link`, `kb build`, `eval linking`, `data linking`.
Registered by cli.py via `register(...)` so this file evolves without touching the shared CLI module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable format) on stdout")]
KbOpt = Annotated[Path | None, typer.Option("--kb", help="Knowledge base JSONL, one {id, name, aliases, description, "
                                                         "type} per line (default: config `models.kb`)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file")]

kb_app = typer.Typer(help="Build and inspect entity-linking knowledge bases.", no_args_is_help=True)


def _cli():
    from latentsearch import cli

    return cli


def link(
    text: Annotated[str, typer.Argument(help='Text whose entity mentions to link, e.g. "Paris posted a selfie"')],
    kb: KbOpt = None,
    no_shortcut: Annotated[bool, typer.Option("--no-shortcut", help="Send every mention to the LLM (slow baseline)")]
    = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Link the entity mentions of a text to a knowledge base and print the links.

    Mentions come from spaCy. Each is looked up in the KB's alias index and by MiniLM over
    `name: description`; one alias hit (or one clearly dominant dense hit) is copied directly, and
    only ambiguous mentions go to SmolLM2, whose answer is constrained by a prefix tree of the
    candidates' labels (it can only write a KB entity). `method` says which path decided.

    Example:  latentsearch link "Trump met Taiwan's president" --kb models/data/linking/kb.jsonl
    """
    cli = _cli()

    def body() -> None:
        from latentsearch.models.linker import get_linker

        settings = cli._settings(config, None, None, None)
        path = kb or (Path(settings.models.kb) if settings.models.kb else None)
        if path is None:
            cli._fail("no knowledge base: pass --kb FILE (JSONL) or set `models.kb`; "
                      "build one with `latentsearch kb build --index NAME --out kb.jsonl`")
        linker = get_linker(path, llm=settings.models.llm, device=settings.models.device)
        links = linker.link([text], shortcut=not no_shortcut)[0]
        if as_json:
            import json

            cli.out.print_json(json.dumps([x.model_dump() for x in links]))
            return
        table = Table(title=f"{len(links)} links · {linker.stats.llm_calls} LLM calls · KB {path.name} "
                            f"({len(linker.kb)} entities)")
        for col in ("mention", "start", "end", "entity_id", "name", "score", "method", "candidates"):
            table.add_column(col)
        for x in links:
            table.add_row(x.mention, str(x.start), str(x.end), x.entity_id, linker.kb.by_id[x.entity_id].label,
                          f"{x.score:.3f}", x.method, str(x.candidates))
        cli.out.print(table)
        if not links:
            cli.console.print("no mention matched a KB entity (mentions come from spaCy; check the KB's names/aliases)")

    cli._run(body)


def kb_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the KB JSONL goes")],
    index: Annotated[str | None, typer.Option("--index", "-i", help="Derive entities from this ingested index")]
    = None,
    user_file: Annotated[Path | None, typer.Option("--from", help="A user KB JSONL merged in (its ids win)",
                                                   exists=True, dir_okay=False)] = None,
    min_mentions: Annotated[int, typer.Option(min=1, help="Mention texts seen fewer times are left out")] = 2,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="embedded | opensearch | elasticsearch")]
    = None,
    url: Annotated[str | None, typer.Option("--url", help="Cluster URL")] = None,
    config: ConfigOpt = None,
) -> None:
    """Build a KB from an index (distinct `latent.<type>` values + frequent `mentions.text`) and/or a user file.

    Example:  latentsearch kb build --index papers --from my_entities.jsonl --out kb.jsonl
    """
    cli = _cli()

    def body() -> None:
        from latentsearch.models.kb import KnowledgeBase, build_kb_from_index, load_kb

        if index is None and user_file is None:
            cli._fail("nothing to build from: pass --index NAME, --from FILE, or both")
        extra = load_kb(user_file).entities if user_file else []
        if index is not None:
            from latentsearch.backends import open_backend

            settings = cli._settings(config, index, backend, url)
            kb = build_kb_from_index(open_backend(settings.backend), settings.index, min_mentions=min_mentions,
                                     extra=extra)
        else:
            kb = KnowledgeBase(extra)
        kb.write(out)
        cli.out.print(f"{len(kb)} entities -> {out}")

    cli._run(body)


def eval_linking(
    data: Annotated[Path | None, typer.Option(help="Folder with kb.jsonl + docs.jsonl (default: models/data/linking)")]
    = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N documents")] = None,
    save: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """InKB micro-F1 (gold mentions given), share of mentions sent to the LLM, and seconds per document
    with the retriever shortcut vs without it (every mention to the trie-constrained LLM over
    alias + dense top-5 candidates); speed-up = without / with. Set: WNUT-17 dev, see its DATA_CARD.md."""
    cli = _cli()

    def body() -> None:
        from latentsearch.models.eval_linking import DATA, evaluate

        settings = cli._settings(config, None, None, None)
        report = evaluate(data or DATA, llm=settings.models.llm, device=settings.models.device, limit=limit)
        if save:
            save.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            cli.out.print_json(report.model_dump_json())
            return
        table = Table(title=f"linking: {report.documents} docs, {report.mentions} mentions "
                            f"({report.ambiguous_mentions} ambiguous), KB {report.kb_entities}")
        for col in ("arm", "P", "R", "micro-F1", "LLM share", "ambiguous acc.", "s/doc"):
            table.add_column(col)
        for arm in (report.with_shortcut, report.without_shortcut):
            acc = "-" if arm.ambiguous_accuracy is None else f"{arm.ambiguous_accuracy:.3f}"
            table.add_row("shortcut" if arm.shortcut else "no shortcut", f"{arm.precision:.3f}", f"{arm.recall:.3f}",
                          f"{arm.micro_f1:.3f}", f"{arm.llm_share:.1%}", acc, f"{arm.seconds_per_doc:.3f}")
        cli.out.print(table)
        cli.out.print(f"speed-up {report.speedup:.2f}x; first-alias-candidate baseline F1 {report.first_candidate_f1:.3f}")

    cli._run(body)


def data_linking(
    max_mentions: Annotated[int, typer.Option(min=10, help="Gold mentions taken from WNUT-17 dev")] = 120,
) -> None:
    """Rebuild models/data/linking/{kb,docs}.jsonl from WNUT-17 dev (../shared/data/wnut17)."""
    from latentsearch.models.eval_linking import DATA, build_set

    kb, docs = build_set(max_mentions=max_mentions)
    _cli().out.print(f"{len(docs)} documents, {sum(len(d.mentions) for d in docs)} mentions, {len(kb)} entities "
                     f"-> {DATA}")


def register(app: typer.Typer, eval_app: typer.Typer, data_app: typer.Typer) -> None:
    app.command("link")(link)
    kb_app.command("build")(kb_build)
    app.add_typer(kb_app, name="kb")
    eval_app.command("linking")(eval_linking)
    data_app.command("linking")(data_linking)
