"""`kb build` and `link`: entity-linking knowledge bases and linking text against them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from latentsearch.cli.options import (
    ConfigOpt,
    JsonOpt,
    KbOpt,
    settings_from_flags,
)
from latentsearch.cli.output import fail, run, stderr, stdout


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

    Example:  latentsearch link "Trump met Taiwan's president" --kb latentsearch/lab/data/linking/kb.jsonl
    """

    def body() -> None:
        from latentsearch.models.linker import get_linker

        settings = settings_from_flags(config, None, None, None)
        path = kb or (Path(settings.models.kb) if settings.models.kb else None)
        if path is None:
            fail("no knowledge base: pass --kb FILE (JSONL) or set `models.kb`; "
                      "build one with `latentsearch kb build --index NAME --out kb.jsonl`")
        linker = get_linker(path, llm=settings.models.llm, device=settings.models.device)
        links = linker.link([text], shortcut=not no_shortcut)[0]
        if as_json:
            import json

            stdout.print_json(json.dumps([x.model_dump() for x in links]))
            return
        table = Table(title=f"{len(links)} links · {linker.stats.llm_calls} LLM calls · KB {path.name} "
                            f"({len(linker.kb)} entities)")
        for col in ("mention", "start", "end", "entity_id", "name", "score", "method", "candidates"):
            table.add_column(col)
        for x in links:
            table.add_row(x.mention, str(x.start), str(x.end), x.entity_id, linker.kb.by_id[x.entity_id].label,
                          f"{x.score:.3f}", x.method, str(x.candidates))
        stdout.print(table)
        if not links:
            stderr.print("no mention matched a KB entity (mentions come from spaCy; check the KB's names/aliases)")

    run(body)


def build(
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

    def body() -> None:
        from latentsearch.models.kb import KnowledgeBase, build_kb_from_index, load_kb

        if index is None and user_file is None:
            fail("nothing to build from: pass --index NAME, --from FILE, or both")
        extra = load_kb(user_file).entities if user_file else []
        if index is not None:
            from latentsearch.backends import open_backend

            settings = settings_from_flags(config, index, backend, url)
            kb = build_kb_from_index(open_backend(settings.backend), settings.index, min_mentions=min_mentions,
                                     extra=extra)
        else:
            kb = KnowledgeBase(extra)
        kb.write(out)
        stdout.print(f"{len(kb)} entities -> {out}")

    run(body)


app = typer.Typer(help="Build and inspect entity-linking knowledge bases.", no_args_is_help=True)
app.command("build")(build)


def register(root: typer.Typer) -> None:
    root.command()(link)
    root.add_typer(app, name="kb")
