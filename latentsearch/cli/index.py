"""`ingest`, `info`, `delete-index`, `mappings`: building and inspecting indexes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from latentsearch import __version__
from latentsearch.cli.options import (
    BackendOpt,
    ConfigOpt,
    IndexOpt,
    JsonOpt,
    UrlOpt,
    settings_from_flags,
)
from latentsearch.cli.output import fail, run, stderr, stdout
from latentsearch.config import EntitySchema, load_settings


def ingest(
    path: Annotated[Path, typer.Argument(help="JSONL/CSV/TSV/Parquet file (optionally .gz), a BEIR folder, or a folder of .txt/.md", exists=True)],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    format: Annotated[str | None, typer.Option("--format", "-f", help="Override detection: jsonl, csv, tsv, parquet, beir, textdir")] = None,
    id_field: Annotated[str | None, typer.Option(help="Field holding the document id (default: _id, then id)")] = None,
    text_field: Annotated[list[str] | None, typer.Option(help="Field(s) holding the text; repeat to join several")] = None,
    title_field: Annotated[str | None, typer.Option(help="Field holding the title (default: title)")] = None,
    text_type: Annotated[str | None, typer.Option(help="What the texts are, e.g. 'biomedical abstract' (entity schema)")] = None,
    latent_types: Annotated[str | None, typer.Option(help="Comma-separated latent entity types, e.g. disease,chemical")] = None,
    latent: Annotated[bool, typer.Option(help="Extract latent entities (when the schema lists types)")] = True,
    vocab: Annotated[bool, typer.Option(help="Update the value vocabulary afterwards (`latentsearch vocab`)")] = True,
    limit: Annotated[int | None, typer.Option(help="Ingest at most N records")] = None,
    resume: Annotated[bool, typer.Option(help="Skip records a previous run already settled (checkpoint)")] = True,
    dead_letter: Annotated[Path | None, typer.Option(help="Where rejected records go (JSONL)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data actor pools; pip install 'latentsearch[ray]')")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="--engine ray: the Ray cluster to join (e.g. ray://head:10001, auto; default RAY_ADDRESS, else a local Ray)")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="--engine ray: processor actors (each loads the models once; default the cluster's CPUs - 1)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a corpus: read, chunk (embedder tokens), embed, bulk-write. Re-runs resume and never duplicate.

    Malformed records (bad JSON, missing text, non-UTF-8 bytes, duplicate ids, mapping errors) go to a
    dead-letter JSONL with their line number; everything else still lands.
    """
    from latentsearch.ingest.pipeline import ingest as run_ingest
    from latentsearch.ingest.readers import FieldMap

    def body() -> None:
        settings = settings_from_flags(config, index, backend, url)
        if text_type or latent_types:  # only the flags given replace the configured schema's parts
            entities = settings.entities.model_dump()
            if text_type:
                entities["text_type"] = text_type
            if latent_types:
                entities["latent_types"] = latent_types
            settings.entities = EntitySchema.model_validate(entities)
        if not latent:
            settings.ingest.latent = False
        if not vocab:
            settings.ingest.vocabulary = False
        fm: dict[str, Any] = {}
        if id_field:
            fm["id_field"] = id_field
        if text_field:
            fm["text_field"] = text_field if len(text_field) > 1 else text_field[0]
        if title_field:
            fm["title_field"] = title_field
        if engine not in ("local", "ray"):
            fail(f"--engine {engine!r} is not supported: use local or ray")
        if engine == "local" and (ray_address or ray_actors):
            fail("--ray-address and --ray-actors apply to --engine ray only")
        common: dict[str, Any] = dict(fields=FieldMap(**fm), fmt=format, limit=limit, resume=resume,
                                      dead_letter_path=dead_letter, progress=progress and not as_json)
        if engine == "ray":
            from latentsearch.ingest.ray_engine import ray_ingest

            report = ray_ingest(path, settings, address=ray_address, actors=ray_actors, **common)
        else:
            report = run_ingest(path, settings, **common)
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        table = Table(title=f"ingest summary: {report.index} ({report.backend})", show_header=False)
        for key, value in report.model_dump().items():
            table.add_row(key.replace("_", " "), str(value))
        stdout.print(table)
        if report.rejected:
            stderr.print(f"[yellow]{report.rejected} record(s) rejected; see {report.dead_letter}[/]")

    run(body)


def info(
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the configuration in force, the backend and its indices (with document counts)."""
    from latentsearch.backends import open_backend
    from latentsearch.mappings import schema_from_mapping

    def body() -> None:
        settings = settings_from_flags(config, index, backend, url)
        engine = open_backend(settings.backend)
        names = engine.list_indices()
        indices = []
        for name in names:
            if index and name != index:
                continue
            mapping = engine.get_mapping(name)
            schema = schema_from_mapping(mapping)
            meta = (mapping.get("_meta") or {}).get("latentsearch") or {}
            indices.append({
                "name": name,
                "chunks": engine.count(name),
                "embedder": meta.get("embedder"),
                "dimension": meta.get("dimension"),
                "entities": schema.model_dump() if schema else None,
            })
        payload = {
            "version": __version__,
            "backend": settings.backend.resolved_kind,
            "url": settings.backend.url,
            "embedded_path": str(settings.backend.resolved_embedded_path) if settings.backend.resolved_kind == "embedded" else None,
            "home": str(settings.home),
            "default_index": settings.index,
            "embedder": settings.models.embedder,
            "indices": indices,
        }
        if as_json:
            stdout.print_json(json.dumps(payload))
            return
        stdout.print(f"[bold]latentsearch {payload['version']}[/] · backend [cyan]{payload['backend']}[/] "
                  f"{payload['url'] or payload['embedded_path']}")
        table = Table("index", "chunks", "embedder", "dim", "text type", "latent types")
        for i in indices:
            ent = i["entities"] or {}
            table.add_row(i["name"], str(i["chunks"]), str(i["embedder"]), str(i["dimension"]),
                          str(ent.get("text_type", "")), ", ".join(t["name"] for t in ent.get("latent_types", [])))
        stdout.print(table)

    run(body)


def delete_index(
    name: Annotated[str, typer.Argument(help="Index to delete")],
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete an index and everything in it (also its value vocabulary and ingest checkpoints)."""
    from latentsearch.backends import open_backend
    from latentsearch.ingest.bulk import Checkpoint
    from latentsearch.ingest.vocabulary import VOCAB_SUFFIX, delete_vocabulary

    def body() -> None:
        settings = settings_from_flags(config, name, backend, url)
        engine = open_backend(settings.backend)
        if not engine.index_exists(name):
            fail(f"index `{name}` does not exist")
        if not yes and not typer.confirm(f"Delete index `{name}` ({engine.count(name)} chunks)?"):
            raise typer.Exit(1)
        engine.delete_index(name)
        if not name.endswith(VOCAB_SUFFIX):  # its value vocabulary goes with it
            delete_vocabulary(engine, name)
        Checkpoint.forget_index(settings.home, name)
        stdout.print(f"deleted index `{name}`")

    run(body)


def mappings(
    backend: Annotated[str, typer.Option("--backend", "-b", help="opensearch | elasticsearch")] = "opensearch",
    config: ConfigOpt = None,
    dimension: Annotated[int, typer.Option(help="Dense vector dimension (384 for all-MiniLM-L6-v2)")] = 384,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the create-index body (settings + mappings) for the configured entity schema."""
    from latentsearch.mappings import index_body

    settings = load_settings(config)
    if backend not in ("opensearch", "elasticsearch"):
        fail("--backend must be opensearch or elasticsearch")
    body = index_body(backend, settings.entities, dimension=dimension, vector=settings.vector,  # type: ignore[arg-type]
                      embedder=settings.models.embedder, text=settings.text)
    text = json.dumps(body, indent=2) + "\n"
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        stderr.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


def doctor(
    index: IndexOpt = None,
    config: ConfigOpt = None,
    repair: Annotated[bool, typer.Option("--repair", help="Remove duplicate rows (the last written wins) and "
                                                          "rebuild a lost meta file")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an embedded index: duplicate ids, lost meta file, bad vectors, a rolled-back manifest, and
    the row count against the ingest checkpoints. Exit code 1 while a problem remains."""
    from latentsearch.backends import open_backend
    from latentsearch.backends.embedded.doctor import diagnose
    from latentsearch.ingest.bulk import Checkpoint

    def body() -> None:
        settings = settings_from_flags(config, index, None, None)
        if settings.backend.resolved_kind != "embedded":
            fail("doctor checks embedded indexes; a cluster has its own tools (_cat/indices, _cluster/health)")
        engine = open_backend(settings.backend)
        report = diagnose(engine, settings.index, repair=repair,  # type: ignore[arg-type]
                          expected_rows=Checkpoint.recorded_writes(settings.home, settings.index))
        if as_json:
            stdout.print_json(report.model_dump_json())
        else:
            table = Table(title=f"doctor: {report.index}", show_header=False)
            for key, value in report.model_dump(exclude={"problems", "repaired"}).items():
                table.add_row(key.replace("_", " "), str(value))
            stdout.print(table)
            for p in report.problems:
                stderr.print(f"[yellow]problem:[/] {escape(p)}")
            for r in report.repaired:
                stderr.print(f"[green]repaired:[/] {escape(r)}")
            if not report.problems:
                stdout.print("[green]no problems found[/]")
        if not report.healthy:
            raise typer.Exit(1)

    run(body)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(info)
    app.command()(doctor)
    app.command("delete-index")(delete_index)
    app.command()(mappings)
