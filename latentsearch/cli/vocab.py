"""`vocab show | update | rebuild | merge | rename | drop | restore | export | import`: an index's value vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from latentsearch.cli.options import BackendOpt, ConfigOpt, IndexOpt, JsonOpt, UrlOpt, settings_from_flags
from latentsearch.cli.output import fail, run, stderr, stdout

HELP = (
    "The value vocabulary of an index: its latent values grouped into concepts.\n\n"
    "The extractor writes free text into latent.<type> ('T-cells', 't cell', 'T lymphocytes'), and a filter on "
    "one string misses the documents that say the same thing in other words. The vocabulary groups the stored "
    "values of each latent type into CONCEPTS: a canonical name, every stored form that means it (its aliases) "
    "and how many chunks hold one of them. A filter on a concept matches all of its forms, and the question side "
    "chooses among concept names instead of inventing values.\n\n"
    "Ingest builds and updates the vocabulary (normalisation, then MiniLM clustering with a cosine threshold); "
    "documents are never rewritten. Curating it is how you tune filters for a domain:\n\n"
    "  merge   two concepts that mean one thing (a filter matches both)\n"
    "  rename  a concept to the name you want to see and filter on\n"
    "  drop    a wrong or useless concept (never used for filtering)\n\n"
    "Edits survive `update` (run after every ingest) and `rebuild`. Examples:\n\n"
    "  latentsearch vocab show --index papers --type anatomy\n"
    "  latentsearch vocab merge --index papers --type anatomy lymphocyte 't cell'\n"
    "  latentsearch vocab export --index papers --out vocab.json\n"
    "  latentsearch vocab import vocab.json          (after editing it by hand)"
)

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode=None)
TypeOpt = Annotated[str, typer.Option("--type", "-t", help="Latent type, e.g. anatomy")]
ThresholdOpt = Annotated[float | None, typer.Option(
    min=0.01, max=1.0, help="MiniLM cosine for two forms to share a concept (default: the stored one, 0.85 new)")]


def _open(config, index, backend, url):
    from latentsearch.backends import open_backend

    settings = settings_from_flags(config, index, backend, url)
    return settings, open_backend(settings.backend)


def _load(engine, index: str):
    from latentsearch.ingest.vocabulary import latent_types, load_vocabulary

    latent_types(engine, index)  # a clear error for a missing index or one without latent types
    vocab = load_vocabulary(engine, index)
    if vocab is None:
        fail(f"index `{index}` has no vocabulary yet: build it with `latentsearch vocab update --index {index}`")
    return vocab


def _edit(config, index, backend, url, change) -> None:
    """Load, apply `change(vocab)` (returns a message), recount, save."""
    from latentsearch.ingest.vocabulary import refresh_counts, save_vocabulary

    def body() -> None:
        settings, engine = _open(config, index, backend, url)
        vocab = _load(engine, settings.index)
        try:
            message = change(vocab)
        except KeyError as err:
            fail(err.args[0])
        refresh_counts(engine, settings.index, vocab)
        stored = save_vocabulary(engine, settings.index, vocab)
        stdout.print(f"{escape(message)} (vocabulary of `{settings.index}`, version {stored.version})")

    run(body)


def show(
    index: IndexOpt = None,
    etype: Annotated[str | None, typer.Option("--type", "-t", help="Only this latent type")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Concepts shown per type, most frequent first")] = 30,
    dropped: Annotated[bool, typer.Option("--dropped", help="Include dropped concepts")] = False,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List concepts with their chunk counts and forms (--json: the export format, same filters)."""

    def body() -> None:
        settings, engine = _open(config, index, backend, url)
        vocab = _load(engine, settings.index)
        if etype is not None and etype not in vocab.concepts:
            fail(f"no latent type {etype!r} in the vocabulary of `{settings.index}`; types: {', '.join(vocab.types)}")
        types = [etype] if etype else vocab.types
        shown = {t: [c for c in vocab.concepts[t] if dropped or not c.dropped][:limit] for t in types}
        if as_json:
            stdout.print_json(vocab.model_copy(update={"concepts": shown}).model_dump_json())
            return
        stdout.print(f"vocabulary of `{settings.index}` · version {vocab.version} · {vocab.updated_at} · "
                     f"threshold {vocab.threshold} · {vocab.model}")
        for t in types:
            total = len(vocab.concepts[t])
            n_dropped = sum(c.dropped for c in vocab.concepts[t])
            table = Table(title=f"{t}: {total} concepts ({n_dropped} dropped), top {len(shown[t])}")
            for col in ("concept", "chunks", "forms", ""):
                table.add_column(col)
            for c in shown[t]:
                others = [f for f in c.aliases if f != c.name]
                flags = ", ".join(x for x, on in (("dropped", c.dropped), ("edited", c.user_edited)) if on)
                table.add_row(escape(c.name), str(c.count), escape(", ".join(others[:8]) + (" …" if len(others) > 8
                                                                                          else "")), flags)
            stdout.print(table)

    run(body)


def _update(index, threshold, backend, url, config, *, from_scratch: bool) -> None:
    def body() -> None:
        from latentsearch.ingest.vocabulary import update_index_vocabulary
        from latentsearch.models.factory import embedder_from_settings

        settings, engine = _open(config, index, backend, url)
        vocab = update_index_vocabulary(engine, settings.index, embedder_from_settings(settings.models),
                                        rebuild=from_scratch, threshold=threshold)
        summary = ", ".join(f"{t}: {len(cs)} concepts from {sum(len(c.aliases) for c in cs)} forms"
                            for t, cs in vocab.concepts.items())
        stdout.print(f"vocabulary of `{settings.index}` version {vocab.version}: {summary or 'no latent values yet'}")

    run(body)


def update(
    index: IndexOpt = None,
    threshold: ThresholdOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Place the index's current values in the vocabulary (new forms join concepts or start new ones;
    counts refreshed). Ingest runs this at its end."""
    _update(index, threshold, backend, url, config, from_scratch=False)


def rebuild(
    index: IndexOpt = None,
    threshold: ThresholdOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Cluster every value again from scratch (e.g. with another --threshold), keeping user edits:
    renamed, merged and dropped concepts keep their forms."""
    _update(index, threshold, backend, url, config, from_scratch=True)


def merge(
    src: Annotated[str, typer.Argument(help="Concept to fold in (it disappears)")],
    dst: Annotated[str, typer.Argument(help="Concept that receives its forms")],
    etype: TypeOpt,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Merge concept SRC into DST: a filter on DST then matches SRC's forms too."""
    _edit(config, index, backend, url,
          lambda v: f"merged {src!r} into {v.merge(etype, src, dst).name!r} ({etype})")


def rename(
    old: Annotated[str, typer.Argument(help="Current concept name")],
    new: Annotated[str, typer.Argument(help="New name (must not be a form of another concept: merge instead)")],
    etype: TypeOpt,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Rename a concept; its stored forms stay, so filters on the new name find the same documents."""
    _edit(config, index, backend, url, lambda v: f"renamed {old!r} to {v.rename(etype, old, new).name!r} ({etype})")


def drop(
    name: Annotated[str, typer.Argument(help="Concept to drop")],
    etype: TypeOpt,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Drop a concept: never offered to questions or used for filters; updates keep it dropped."""
    _edit(config, index, backend, url, lambda v: f"dropped {v.drop(etype, name).name!r} ({etype})")


def restore(
    name: Annotated[str, typer.Argument(help="Dropped concept to bring back")],
    etype: TypeOpt,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Undo a drop."""
    _edit(config, index, backend, url, lambda v: f"restored {v.restore(etype, name).name!r} ({etype})")


def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write ('-': stdout)")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the vocabulary as JSON (edit it by hand, keep it in version control, `import` it back)."""

    def body() -> None:
        settings, engine = _open(config, index, backend, url)
        text = _load(engine, settings.index).export() + "\n"
        if str(out) == "-":
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            stderr.print(f"wrote {out}")

    run(body)


def import_(
    path: Annotated[Path, typer.Argument(help="A JSON file written by `vocab export`", exists=True, dir_okay=False)],
    index: Annotated[str | None, typer.Option("--index", "-i", help="Index to attach it to (default: the file's)")]
    = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replace the index's vocabulary with a JSON file (counts are recomputed from the index)."""

    def body() -> None:
        from latentsearch.ingest.vocabulary import Vocabulary, latent_types, refresh_counts, save_vocabulary

        try:
            vocab = Vocabulary.import_(path.read_bytes())
        except ValueError as err:
            fail(f"{path} is not a vocabulary export: {str(err).splitlines()[0]}")
        settings, engine = _open(config, index or vocab.index, backend, url)
        unknown = sorted(set(vocab.types) - set(latent_types(engine, settings.index)))
        if unknown:
            fail(f"{path} has latent types {unknown} that index `{settings.index}` does not have")
        current = _current_version(engine, settings.index)
        vocab = vocab.model_copy(update={"index": settings.index, "version": max(current, vocab.version)})
        refresh_counts(engine, settings.index, vocab)
        stored = save_vocabulary(engine, settings.index, vocab)
        stdout.print(f"imported {sum(len(cs) for cs in stored.concepts.values())} concepts into the vocabulary "
                     f"of `{settings.index}` (version {stored.version})")

    run(body)


def _current_version(engine, index: str) -> int:
    from latentsearch.ingest.vocabulary import load_vocabulary

    current = load_vocabulary(engine, index)
    return current.version if current else 0


app.command()(show)
app.command()(update)
app.command()(rebuild)
app.command()(merge)
app.command()(rename)
app.command()(drop)
app.command()(restore)
app.command()(export)
app.command("import")(import_)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vocab")

