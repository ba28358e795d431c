"""`latentsearch` command line: ingest, search, info, delete-index, mappings, demo.

Every command reads the same configuration (defaults < config file < LATENTSEARCH_* env < flags);
with no --url the embedded LanceDB engine under $LATENTSEARCH_HOME (default ~/.latentsearch) is used.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from latentsearch.config import BackendKind, EntitySchema, Settings, load_settings

app = typer.Typer(
    name="latentsearch",
    help=(
        "Retrieval that understands what a text implies. Ingest a corpus (chunks + dense vectors, "
        "later latent entities and mention vectors) into OpenSearch, Elasticsearch or the embedded "
        "LanceDB engine, and search it.\n\n"
        "Quick start:  latentsearch demo\n\n"
        "Configuration: flags > LATENTSEARCH_* env (nested with __, e.g. LATENTSEARCH_BACKEND__URL) > "
        "latentsearch.toml/.yaml (or $LATENTSEARCH_CONFIG) > defaults."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file", exists=True, dir_okay=False)]
IndexOpt = Annotated[str | None, typer.Option("--index", "-i", help="Index name (default: config `index`)")]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", "-b", help="embedded | opensearch | elasticsearch (default: embedded without --url)")
]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Cluster URL, e.g. https://localhost:9200")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable format) on stdout")]


def _settings(config: Path | None, index: str | None, backend: str | None, url: str | None, **extra: Any) -> Settings:
    settings = load_settings(config, **extra)
    updates: dict[str, Any] = {}
    if index:
        updates["index"] = index
    if backend or url:
        b = settings.backend.model_copy(update={k: v for k, v in (("kind", backend), ("url", url)) if v})
        if backend and backend not in BackendKind.__args__:  # type: ignore[attr-defined]
            raise typer.BadParameter(f"--backend must be one of {', '.join(BackendKind.__args__)}")  # type: ignore[attr-defined]
        updates["backend"] = b
    return Settings.model_validate({**settings.model_dump(), **updates}) if updates else settings


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _run(fn):
    from latentsearch.backends.base import BackendError
    from latentsearch.models.registry import ModelNotFoundError

    try:
        return fn()
    except (BackendError, ModelNotFoundError, ValueError, FileNotFoundError) as err:
        _fail(str(err))


@app.command()
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
    limit: Annotated[int | None, typer.Option(help="Ingest at most N records")] = None,
    resume: Annotated[bool, typer.Option(help="Skip records a previous run already settled (checkpoint)")] = True,
    dead_letter: Annotated[Path | None, typer.Option(help="Where rejected records go (JSONL)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a corpus: read, chunk (embedder tokens), embed, bulk-write. Re-runs resume and never duplicate.

    Malformed records (bad JSON, missing text, non-UTF-8 bytes, duplicate ids, mapping errors) go to a
    dead-letter JSONL with their line number; everything else still lands.
    """
    from latentsearch.ingest.pipeline import ingest as run_ingest
    from latentsearch.ingest.readers import FieldMap

    def body() -> None:
        settings = _settings(config, index, backend, url)
        if text_type or latent_types:  # only the flags given replace the configured schema's parts
            entities = settings.entities.model_dump()
            if text_type:
                entities["text_type"] = text_type
            if latent_types:
                entities["latent_types"] = latent_types
            settings.entities = EntitySchema.model_validate(entities)
        if not latent:
            settings.ingest.latent = False
        fm: dict[str, Any] = {}
        if id_field:
            fm["id_field"] = id_field
        if text_field:
            fm["text_field"] = text_field if len(text_field) > 1 else text_field[0]
        if title_field:
            fm["title_field"] = title_field
        report = run_ingest(
            path, settings, fields=FieldMap(**fm), fmt=format, limit=limit, resume=resume,
            dead_letter_path=dead_letter, progress=progress and not as_json,
        )
        if as_json:
            out.print_json(report.model_dump_json())
            return
        table = Table(title=f"ingest summary: {report.index} ({report.backend})", show_header=False)
        for key, value in report.model_dump().items():
            table.add_row(key.replace("_", " "), str(value))
        out.print(table)
        if report.rejected:
            console.print(f"[yellow]{report.rejected} record(s) rejected; see {report.dead_letter}[/]")

    _run(body)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or query text")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=10_000, help="Number of documents to return")] = 10,
    mode: Annotated[str, typer.Option(help="dense (kNN), bm25, or hybrid (BM25 + kNN fused)")] = "dense",
    strictness: Annotated[str, typer.Option(
        help="Latent-entity filter: auto (strictest level that keeps --min-hits good documents), strict (every "
        "entity), loose (any one), none, an int (that many entities) or a percent such as 60%. Needs an index "
        "with latent types; bm25 mode ignores it")] = "auto",
    min_hits: Annotated[int, typer.Option(min=1, help="auto: documents a strictness level must keep")] = 5,
    fusion: Annotated[str, typer.Option(help="hybrid: rrf or min_max")] = "rrf",
    collapse: Annotated[bool, typer.Option(help="One hit per document (its best chunk)")] = True,
    explain: Annotated[bool, typer.Option("--explain", help="Print extracted entities, mapped values, per-level hit counts, the chosen level and why")] = False,
    show_dsl: Annotated[bool, typer.Option("--show-dsl", help="Print the OpenSearch request body")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search an index. On an index with latent types, dense and hybrid queries are rewritten: the question's
    latent entities become a filter inside the k-NN clause, as strict as the results allow.

    `--json` prints {query, index, mode, hits[], explanation} (rewritten) or a SearchResult (bm25 / no latent types).
    """
    from latentsearch.backends import open_backend
    from latentsearch.mappings import schema_from_mapping
    from latentsearch.models.embedder import get_embedder
    from latentsearch.query.search import search as run_search

    if mode not in ("dense", "bm25", "hybrid"):
        _fail("--mode must be dense, bm25 or hybrid")

    def body() -> None:
        settings = _settings(config, index, backend, url)
        engine = open_backend(settings.backend)
        embedder = None if mode == "bm25" else get_embedder(settings.models.embedder, settings.models.device)
        schema = schema_from_mapping(engine.get_mapping(settings.index)) if mode != "bm25" else None
        if schema is not None and schema.latent_types and strictness != "none" and collapse:
            from latentsearch.models.extractor import get_extractor
            from latentsearch.query.rewriter import QueryRewriter

            rewriter = QueryRewriter(engine, settings.index, embedder, None, schema=schema, store=_query_store(settings))
            rewriter.vocabulary.load(schema.type_names)
            if any(rewriter.vocabulary.values(t) for t in schema.type_names):  # else no LLM to load
                rewriter.extractor = get_extractor(settings.models.llm, settings.models.extractor_adapter,
                                                   settings.models.device)
            found = rewriter.search(query, k=k, mode=mode, strictness=strictness, min_hits=min_hits, fusion=fusion,
                                    include_dsl=show_dsl)
            if as_json:
                out.print_json(found.model_dump_json(exclude_none=True))
                return
            if explain:
                _print_explanation(found.explanation)
            if show_dsl:
                out.print_json(json.dumps(found.explanation.dsl))
            _print_hits(found)
            return
        result = run_search(query, backend=engine, index=settings.index, embedder=embedder, k=k, mode=mode,  # type: ignore[arg-type]
                            collapse=collapse, include_dsl=show_dsl)
        if as_json:
            out.print_json(result.model_dump_json(exclude_none=True))
            return
        if show_dsl:
            from latentsearch.query.rewriter import shorten_vectors

            out.print_json(json.dumps(shorten_vectors(result.dsl)))
        _print_hits(result)

    _run(body)


def _query_store(settings: Settings) -> Any:
    """The content cache ingest uses, so a question's extracted entities are computed once per machine."""
    from latentsearch.ingest.processors import ContentCache

    return ContentCache(settings.cache_dir / "processors.sqlite") if settings.ingest.cache else None


def _print_explanation(ex: Any) -> None:
    table = Table(title="latent entities of the question")
    for col in ("type", "extracted", "index values matched"):
        table.add_column(col)
    for m in ex.entities + ex.unmapped:
        table.add_row(m.type, m.extracted, ", ".join(f"{v} ({h})" for v, h in m.how.items()) or "[dim](none in the index)[/]")
    out.print(table)
    levels = Table(title=f"strictness {ex.strictness} · floor {ex.floor if ex.floor is None else round(ex.floor, 4)}")
    for col in ("minimum_should_match", "documents", "above floor", ""):
        levels.add_column(col)
    for lv in ex.levels:
        levels.add_row("no filter" if lv.msm is None else str(lv.msm), str(lv.hits), str(lv.above_floor),
                       "← chosen" if lv.msm == ex.chosen_msm else "")
    out.print(levels)
    out.print(f"[bold]why:[/] {ex.reason}   ·   " + ", ".join(f"{k} {v:.0f} ms" for k, v in ex.timings_ms.items()))


def _print_hits(result: Any) -> None:
    total = f"{result.total} matching chunks · " if hasattr(result, "total") else ""
    table = Table(title=f"{total}{result.took_ms:.0f} ms · {result.mode} · {result.index}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc")
    table.add_column("title / text")
    for rank, hit in enumerate(result.hits, 1):
        snippet = (hit.title + " — " if hit.title else "") + hit.text
        table.add_row(str(rank), f"{hit.score:.4f}", f"{hit.doc_id}#{hit.chunk}", snippet[:160] + ("…" if len(snippet) > 160 else ""))
    out.print(table)


@app.command()
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
        settings = _settings(config, index, backend, url)
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
            "version": _version(),
            "backend": settings.backend.resolved_kind,
            "url": settings.backend.url,
            "embedded_path": str(settings.backend.resolved_embedded_path) if settings.backend.resolved_kind == "embedded" else None,
            "home": str(settings.home),
            "default_index": settings.index,
            "embedder": settings.models.embedder,
            "indices": indices,
        }
        if as_json:
            out.print_json(json.dumps(payload))
            return
        out.print(f"[bold]latentsearch {payload['version']}[/] · backend [cyan]{payload['backend']}[/] "
                  f"{payload['url'] or payload['embedded_path']}")
        table = Table("index", "chunks", "embedder", "dim", "text type", "latent types")
        for i in indices:
            ent = i["entities"] or {}
            table.add_row(i["name"], str(i["chunks"]), str(i["embedder"]), str(i["dimension"]),
                          str(ent.get("text_type", "")), ", ".join(t["name"] for t in ent.get("latent_types", [])))
        out.print(table)

    _run(body)


@app.command("delete-index")
def delete_index(
    name: Annotated[str, typer.Argument(help="Index to delete")],
    backend: BackendOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete an index and everything in it (also forgets its ingest checkpoints)."""
    from latentsearch.backends import open_backend
    from latentsearch.ingest.bulk import Checkpoint

    def body() -> None:
        settings = _settings(config, name, backend, url)
        engine = open_backend(settings.backend)
        if not engine.index_exists(name):
            _fail(f"index `{name}` does not exist")
        if not yes and not typer.confirm(f"Delete index `{name}` ({engine.count(name)} chunks)?"):
            raise typer.Exit(1)
        engine.delete_index(name)
        Checkpoint.forget_index(settings.home, name)
        out.print(f"deleted index `{name}`")

    _run(body)


@app.command()
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
        _fail("--backend must be opensearch or elasticsearch")
    body = index_body(backend, settings.entities, dimension=dimension, vector=settings.vector,  # type: ignore[arg-type]
                      embedder=settings.models.embedder)
    text = json.dumps(body, indent=2) + "\n"
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        console.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


@app.command()
def demo(
    corpus: Annotated[Path | None, typer.Option(help="Corpus to ingest (default: SciFact from ../shared/data, else the bundled 500-abstract sample)")] = None,
    index: Annotated[str, typer.Option("--index", "-i", help="Index to (re)build")] = "scifact-demo",
    limit: Annotated[int | None, typer.Option(help="Ingest at most N abstracts")] = None,
    queries: Annotated[int, typer.Option(help="How many SciFact claims to run as queries")] = 3,
    k: Annotated[int, typer.Option("--k", "-k")] = 5,
    fresh: Annotated[bool, typer.Option(help="Delete and rebuild the index first")] = False,
    latent: Annotated[bool, typer.Option(help="Also extract latent entities (LLM; slow on CPU)")] = False,
) -> None:
    """End to end on the embedded engine: ingest SciFact abstracts, run claims as queries, print hits."""
    from latentsearch import demo as demo_mod

    def body() -> None:
        demo_mod.run(corpus=corpus, index=index, limit=limit, n_queries=queries, k=k, fresh=fresh, latent=latent,
                     print_hits=_print_hits, console=out)

    _run(body)


train_app = typer.Typer(help="Train the small models latentsearch ships (LoRA adapters, projection heads).",
                         no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate models and retrieval on real and synthetic data.", no_args_is_help=True)
data_app = typer.Typer(help="Build training data sets.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
# The other components' commands live beside their code, one module each, and register here.
from latentsearch import cli_entities, cli_linking, cli_onnx, cli_rag, cli_serve  # noqa: E402

cli_entities.register(app, train_app, eval_app, data_app)  # entities, train mention-head, eval entity-retrieval/layer-sweep
cli_serve.register(app)  # serve
cli_onnx.register(app)  # export-onnx, opensearch-setup
cli_rag.register(app, eval_app)  # ask, eval rag
cli_linking.register(app, eval_app, data_app)  # link, eval linking, data kb


@data_app.command("lentex")
def data_lentex(
    parts: Annotated[Path | None, typer.Option(help="Folder of authored parts (default: models/data/lentex/parts)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where train/test_seen/test_unseen.jsonl go (default: models/data/lentex)")] = None,
    teacher_url: Annotated[str | None, typer.Option(help="Generate with an OpenAI-compatible teacher instead (base URL)")] = None,
    teacher_model: Annotated[str, typer.Option(help="Teacher model name")] = "gpt-4o-mini",
    domains: Annotated[int, typer.Option(help="With a teacher: domain-generation rounds")] = 10,
    per_domain: Annotated[int, typer.Option(help="With a teacher: examples per domain")] = 30,
) -> None:
    """Build the LentEx synthetic set: filter (Rouge-L <= 0.5, near-duplicates) and split by domain and instance.

    Without --teacher-url the authored parts are used; with it, steps 1-2 are generated by the teacher
    first (any OpenAI-compatible endpoint; the key comes from $OPENAI_API_KEY)."""
    from latentsearch.models import lentex_data as ld

    def body() -> None:
        parts_dir = parts or ld.DATA_DIR / "parts"
        if teacher_url:  # teacher output gets its own folder: never mixed with the authored parts
            parts_dir = (out_dir or Path.cwd() / "lentex-data") / "teacher-parts"
            teacher = ld.OpenAITeacher(teacher_url, teacher_model, os.environ.get("OPENAI_API_KEY"))
            doms = ld.generate_domains(teacher, rounds=domains)
            parts_dir.mkdir(parents=True, exist_ok=True)
            with (parts_dir / "teacher.jsonl").open("w", encoding="utf-8") as fh:
                for d in doms:
                    fh.write(json.dumps({"kind": "domain", **d.model_dump()}) + "\n")
                    for ex in ld.generate_instances(teacher, d, n=10, rounds=max(1, per_domain // 10)):
                        fh.write(json.dumps({"kind": "example", "domain": d.domain, "text": ex.text, "label": ex.label}) + "\n")
        stats = ld.build_from_parts(parts_dir, out_dir or (parts_dir.parent if teacher_url else ld.DATA_DIR))
        out.print_json(json.dumps(stats))

    _run(body)


@data_app.command("beir-subset")
def data_beir_subset(
    folder: Annotated[Path, typer.Argument(help="A BEIR folder (corpus.jsonl, queries[.split].jsonl, qrels/<split>.tsv)", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the subset's corpus.jsonl, queries.jsonl, qrels/test.tsv go")],
    queries: Annotated[int, typer.Option(min=1, help="The first N judged queries")] = 150,
    documents: Annotated[int, typer.Option(min=1, help="Corpus size: all relevant documents plus seeded distractors")] = 600,
    split: Annotated[str, typer.Option(help="qrels split to read")] = "train",
    seed: Annotated[int, typer.Option()] = 13,
) -> None:
    """A smaller BEIR set for CPU budgets: N judged queries, their relevant documents, and distractors."""
    from latentsearch.query.eval_retrieval import beir_subset

    _run(lambda: out.print_json(beir_subset(folder, out_dir, queries=queries, documents=documents, split=split,
                                            seed=seed).model_dump_json()))


@train_app.command("extractor")
def train_extractor(
    model: Annotated[str, typer.Option(help="Base causal LM (name or folder)")] = "SmolLM2-135M-Instruct",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Adapter folder (default: the shipped one)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps (size the run to the machine)")] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N (shuffled) training examples")] = None,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 1e-4,
    epochs: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """LoRA fine-tuning of the extractor on the synthetic LentEx set (r=16, alpha=32, lr 1e-4, warmup 1 %, 1 epoch)."""
    from latentsearch.models.train_extractor import TrainConfig, train

    def body() -> None:
        cfg = TrainConfig(model=model, max_steps=max_steps, limit=limit, batch_size=batch_size, lr=lr,
                          epochs=epochs, seed=seed)
        if out_dir:
            cfg.out_dir = out_dir
        summary = train(cfg)
        out.print_json(json.dumps(summary))

    _run(body)


@eval_app.command("extraction")
def eval_extraction(
    methods: Annotated[str, typer.Option(help="Comma-separated: nearest-label, base, lentex")] = "nearest-label,base,lentex",
    adapter: Annotated[str, typer.Option(help="LoRA adapter folder (default: the shipped one)")] = "default",
    limit: Annotated[int | None, typer.Option(help="Sample N examples per test split")] = None,
    similarity_model: Annotated[str, typer.Option(help="Similarity model (the paper: all-mpnet-base-v2)")] = "all-mpnet-base-v2",
    as_json: JsonOpt = False,
) -> None:
    """Mean semantic similarity of predictions vs references on seen and unseen domains (the LentEx metric)."""
    from latentsearch.models.eval_extraction import evaluate, table

    def body() -> None:
        report = evaluate(methods=[m.strip() for m in methods.split(",") if m.strip()], adapter=adapter,
                          limit=limit, similarity_model=similarity_model,
                          progress=None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]")))
        if as_json:
            out.print_json(report.model_dump_json())
        else:
            out.print(table(report))

    _run(body)


@eval_app.command("clustering")
def eval_clustering(
    jsonl: Annotated[Path, typer.Option("--jsonl", help="Labelled JSONL (optionally .gz)", exists=True)],
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    label_field: Annotated[str, typer.Option("--label-field")] = "label",
    n: Annotated[int, typer.Option(help="Stratified sample size")] = 2000,
    text_type: Annotated[str, typer.Option()] = "newsgroup post",
    latent_entity_type: Annotated[str, typer.Option()] = "discussion topic",
    adapter: Annotated[str, typer.Option(help="LoRA adapter folder, `default`, or `none` (base model)")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """V-measure (MiniBatchKMeans, k = labels) of MiniLM(text), MiniLM(latent entities) and their concatenation."""
    from latentsearch.models.eval_clustering import evaluate

    def body() -> None:
        report = evaluate(jsonl, text_field=text_field, label_field=label_field, n=n, text_type=text_type,
                          latent_entity_type=latent_entity_type, adapter=adapter)
        if as_json:
            out.print_json(report.model_dump_json())
            return
        table = Table(title=f"clustering: {report.documents} docs, {report.labels} labels "
                            f"(extraction {report.extraction_seconds:.0f} s)")
        table.add_column("representation")
        table.add_column("V-measure", justify="right")
        for row in report.rows:
            table.add_row(row.representation, f"{100 * row.v_measure:.2f} ± {100 * row.v_measure_std:.2f}")
        out.print(table)

    _run(body)


@eval_app.command("retrieval")
def eval_retrieval(
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
    from latentsearch.models.embedder import get_embedder
    from latentsearch.query.eval_retrieval import evaluate_retrieval

    def body() -> None:
        settings = _settings(config, index, backend, url)
        engine = open_backend(settings.backend)
        embedder = get_embedder(settings.models.embedder, settings.models.device)
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
        extractor = None
        if any("+latent:" in v for v in chosen):
            from latentsearch.models.extractor import get_extractor

            extractor = get_extractor(settings.models.llm, settings.models.extractor_adapter, settings.models.device)
        report = evaluate_retrieval(
            backend=engine, index=settings.index, embedder=embedder, extractor=extractor, queries_path=queries,
            qrels_path=qrels, variants=chosen, limit=limit, run_dir=run_dir, progress=not as_json,
            rewrite_options={"min_hits": min_hits, "floor_rank": floor_rank}, store=_query_store(settings),
        )
        if out_file:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(report.model_dump_json(indent=2) + "\n")
        if as_json:
            out.print_json(report.model_dump_json())
            return
        table = Table(title=f"retrieval on `{report.index}`: {report.queries} queries, document level")
        names = list(report.results[0].metrics) if report.results else []
        for col in ["variant", *names, "p50 ms", "p95 ms"]:
            table.add_column(col, justify="left" if col == "variant" else "right")
        for r in report.results:
            table.add_row(r.variant, *(f"{r.metrics[n]:.4f}" for n in names), f"{r.latency_ms['p50']:.0f}",
                          f"{r.latency_ms['p95']:.0f}")
        out.print(table)
        for d in report.diagnostics:
            out.print(f"{d.variant}: filtered {100 * d.filtered_share:.0f}% of queries, levels {d.chosen_levels}, "
                      f"relevant docs kept by the filter {d.relevant_kept}, mean entities {d.mean_entities}")

    _run(body)


def _version() -> str:
    from latentsearch import __version__

    return __version__


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
