"""`export-onnx` and `opensearch-setup`: taking the models to production engines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from latentsearch.cli.output import fail, stderr, stdout


def export_onnx(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (created; models exported earlier "
                                                               "there are kept unless re-exported)")],
    what: Annotated[str, typer.Option(help="Comma-separated: embedder, extractor, mentions")] = "embedder,extractor",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file (models.* are read)",
                                                exists=True, dir_okay=False)] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder name or folder (default: config models.embedder)")] = None,
    llm: Annotated[str | None, typer.Option(help="Extractor LLM name or folder (default: config models.llm)")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter merged before export: `default`, `none` or a "
                                                     "folder (default: config models.extractor_adapter)")] = None,
    opset: Annotated[int, typer.Option(min=14, max=21, help="ONNX opset")] = 17,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout")] = False,
) -> None:
    """Export the models to ONNX for onnxruntime (CPU or CUDA) and the model server.

    Writes one sub-folder per model (graph + tokenizer) and `latentsearch-onnx.json` (inputs, outputs,
    opset, source fingerprint). Use the result by pointing the config at it:

        latentsearch export-onnx --out ~/onnx
        LATENTSEARCH_MODELS__EMBEDDER=~/onnx LATENTSEARCH_MODELS__EXTRACTOR_ADAPTER=~/onnx latentsearch ingest ...

    The embedder takes seconds; the extractor (LLM with its LoRA merged, KV cache) 1-2 minutes on 2 CPU cores.
    """
    from latentsearch.config import load_settings
    from latentsearch.models.onnx_manifest import ROLES
    from latentsearch.onnx_export.export import ExportError, export
    from latentsearch.progress import progress_bar

    roles = [w.strip() for w in what.split(",") if w.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        fail(f"--what takes a comma-separated list of {', '.join(ROLES)}; got {what!r}")
    settings = load_settings(config)
    models = settings.models
    with progress_bar(not as_json) as live:
        task = live.add_task("export", total=len(roles)) if live else None

        started = iter(range(len(roles)))

        def step(role: str) -> None:  # called as each model starts
            n = next(started)
            if live:
                live.update(task, description=f"export {role}", completed=n)

        try:
            manifest = export(out_dir, roles, embedder=embedder or models.embedder, llm=llm or models.llm,  # type: ignore[arg-type]
                              adapter=adapter or models.extractor_adapter, opset=opset, on_step=step)
        except (ExportError, FileNotFoundError, ValueError) as err:
            fail(str(err))
        if live:
            live.update(task, completed=len(roles), description="export done")
    if as_json:
        stdout.print_json(manifest.model_dump_json())
        return
    for role, entry in manifest.models.items():
        ins = ", ".join(f"{i.name}{i.shape}" for i in entry.inputs[:4]) + (" …" if len(entry.inputs) > 4 else "")
        stdout.print(f"[bold]{role}[/]: {out_dir / entry.folder / entry.files[0]}  (from {entry.source}, opset "
                  f"{entry.opset}, fingerprint {entry.source_fingerprint})\n  inputs: {ins}\n  outputs: "
                  f"{', '.join(o.name for o in entry.outputs[:3])}{' …' if len(entry.outputs) > 3 else ''}")


def opensearch_setup(
    url: Annotated[str | None, typer.Option("--url", help="Cluster URL (default: config backend.url)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config (backend auth/TLS, entity "
                                                "schema, models.embedder)", exists=True, dir_okay=False)] = None,
    server_url: Annotated[str, typer.Option(help="The model server's URL *as the cluster sees it* (in docker/: "
                                                 "the service name)")] = "http://latentsearch:8080",
    server_api_key: Annotated[str | None, typer.Option(envvar="LATENTSEARCH_API_KEY",
                                                       help="The model server's API key, if it requires one")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated: embeddings, extract, mentions")] = "embeddings,extract,mentions",
    text_type: Annotated[str | None, typer.Option(help="Entity schema text type (default: config)")] = None,
    latent_types: Annotated[str | None, typer.Option(help="Comma-separated latent entity types (default: config)")] = None,
    ingest_pipeline: Annotated[str, typer.Option(help="Ingest pipeline name")] = "latentsearch-ingest",
    search_pipeline: Annotated[str, typer.Option(help="Search pipeline name")] = "latentsearch-query",
    k: Annotated[int, typer.Option(min=1, max=10_000, help="k of the k-NN query the search pipeline writes")] = 10,
    cluster_settings: Annotated[bool, typer.Option(help="PUT the ML Commons cluster settings (trusted endpoint, "
                                                        "private IPs, any node)")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the requests instead of sending them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the requests (dry run) or the created ids as JSON")] = False,
) -> None:
    """Register the model server with OpenSearch ML Commons and create the ingest and search pipelines.

    In order: cluster settings; model group; per model an `http` connector to the server, a remote model and
    its deployment; an ingest pipeline whose `ml_inference` processors fill `vector`, `latent.<type>` and
    `mentions`; a search pipeline that turns `{"match": {"text": {"query": ...}}}` into k-NN on `vector`.
    Then index through it:  PUT papers/_settings {"index.default_pipeline": "latentsearch-ingest"}.

        latentsearch opensearch-setup --url https://localhost:9200 --dry-run
    """
    from latentsearch.backends.opensearch import client_kwargs
    from latentsearch.config import EntitySchema, load_settings
    from latentsearch.mappings.ml_commons import MODEL_KEYS, MLCommonsConfig, SetupError, apply, opensearch_sender, plan

    settings = load_settings(config)
    keys = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in keys if m not in MODEL_KEYS]
    if bad or not keys:
        fail(f"--models takes a comma-separated list of {', '.join(MODEL_KEYS)}; got {models!r}")
    entities = settings.entities
    if text_type or latent_types is not None:
        entities = EntitySchema(text_type=text_type or entities.text_type,
                                latent_types=latent_types if latent_types is not None else entities.latent_types)
    try:
        cfg = MLCommonsConfig(server_url=server_url, api_key=server_api_key, embedder=settings.models.embedder,
                              entities=entities, models=keys, ingest_pipeline=ingest_pipeline,  # type: ignore[arg-type]
                              search_pipeline=search_pipeline, k=k, cluster_settings=cluster_settings)
        steps = plan(cfg)
    except ValueError as err:
        fail(str(err))
    if "extract" in keys and "extract" not in cfg.active_models:
        stderr.print("[yellow]note:[/] no latent entity types configured (--latent-types or config "
                      "entities.latent_types): skipping the extract model")
    if dry_run:
        if as_json:
            stdout.print_json(json.dumps([s.model_dump(exclude_none=True) for s in steps]))
            return
        for i, s in enumerate(steps, 1):
            sys.stdout.write(f"# {i}. {s.name}\n{s.method} {s.path}\n")
            if s.body is not None:
                sys.stdout.write(json.dumps(s.body, indent=2) + "\n")
            sys.stdout.write("\n")
        return
    backend = settings.backend.model_copy(update={"url": url} if url else {})
    if not backend.url:
        fail("no cluster URL: pass --url https://host:9200 or set backend.url (LATENTSEARCH_BACKEND__URL)")
    from opensearchpy import OpenSearch

    client = OpenSearch(**client_kwargs(backend))

    def progress(step: Any, response: dict[str, Any]) -> None:
        if not as_json:
            got = ", ".join(f"{k}={response[v]}" for k, v in step.capture.items() if v in response)
            stderr.print(f"[green]✓[/] {step.name}  {step.method} {step.path}" + (f"  ({got})" if got else ""))

    try:
        ids = apply(steps, opensearch_sender(client), on_step=progress)
    except SetupError as err:
        fail(str(err))
    finally:
        client.close()
    if as_json:
        stdout.print_json(json.dumps({"ids": ids, "ingest_pipeline": ingest_pipeline,
                                   "search_pipeline": search_pipeline if "embeddings" in cfg.active_models else None}))
    else:
        stdout.print(f"ready: ingest pipeline [bold]{ingest_pipeline}[/]"
                  + (f", search pipeline [bold]{search_pipeline}[/]" if "embeddings" in cfg.active_models else ""))


def register(app: typer.Typer) -> None:
    app.command("export-onnx")(export_onnx)
    app.command("opensearch-setup")(opensearch_setup)
