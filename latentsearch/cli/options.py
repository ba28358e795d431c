"""One copy of every option two or more commands share, and the flags -> Settings step.

Configuration precedence everywhere: flags > LATENTSEARCH_* env (nested with __) > latentsearch.toml/.yaml
(or $LATENTSEARCH_CONFIG) > defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from latentsearch.config import BackendKind, Settings, load_settings

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML/YAML config file", exists=True,
                                                dir_okay=False)]
IndexOpt = Annotated[str | None, typer.Option("--index", "-i", help="Index name (default: config `index`)")]
BackendOpt = Annotated[str | None, typer.Option(
    "--backend", "-b", help="embedded | opensearch | elasticsearch (default: embedded without --url)")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Cluster URL, e.g. https://localhost:9200")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable format) on stdout")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars")]
StrictnessOpt = Annotated[str, typer.Option(
    help="Latent filter strictness: auto (strictest level that keeps enough good documents), strict (every "
         "query entity), loose (any one), none (no latent filter), an int (that many entities) or a percent ('60%')")]
FilterOpt = Annotated[str | None, typer.Option(
    "--filter", help='Filter, the one syntax of /search, /rag and LangChain: JSON {"journal": "The Lancet", '
                     '"year": {"gte": 2020}, "doc_id": ["a", "b"]}, field=value pairs (journal=The Lancet), or '
                     'any OpenSearch DSL clause')]
LlmUrlOpt = Annotated[str | None, typer.Option(
    "--llm-url", help="OpenAI-compatible API root (e.g. the model server's http://localhost:8000/v1); "
                      "default: config rag.base_url, else the local SmolLM2")]
LlmModelOpt = Annotated[str | None, typer.Option("--llm-model", help="Model name (endpoint) or folder (local)")]
FusionOpt = Annotated[str | None, typer.Option(help="hybrid: rrf or min_max (default: the fitted one, see README "
                                            "\"Lexical search\")")]
WeightsOpt = Annotated[str | None, typer.Option(help="hybrid min_max: BM25,k-NN weights, e.g. 0.3,0.7")]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", min=1,
                                                  help="Answer length cap (default rag.max_new_tokens)")]
KbOpt = Annotated[Path | None, typer.Option("--kb", help="Knowledge base JSONL, one {id, name, aliases, description, "
                                                         "type} per line (default: config models.kb)")]
WnutOpt = Annotated[Path | None, typer.Option(
    "--wnut", help="WNUT-17 folder (wnut17train.conll, emerging.dev.conll); default: <data_dir>/wnut17 "
                   "(config `data_dir` or $LATENTSEARCH_DATA_DIR)", file_okay=False)]


def settings_from_flags(config: Path | None, index: str | None, backend: str | None, url: str | None,
                        **extra: Any) -> Settings:
    """The configuration in force, with the command's --index/--backend/--url on top."""
    settings = load_settings(config, **extra)
    updates: dict[str, Any] = {}
    if index is not None:  # `--index ''` is an error, not "use the default"
        if not index.strip():
            raise typer.BadParameter("must not be empty (leave the option out for the configured default)",
                                     param_hint="--index")
        updates["index"] = index
    if backend or url:
        if backend and backend not in BackendKind.__args__:  # type: ignore[attr-defined]
            raise typer.BadParameter(f"--backend must be one of {', '.join(BackendKind.__args__)}")  # type: ignore[attr-defined]
        updates["backend"] = settings.backend.model_copy(update={k: v for k, v in (("kind", backend), ("url", url)) if v})
    return Settings.model_validate({**settings.model_dump(), **updates}) if updates else settings


def strictness_value(value: str) -> str | int:
    """`--strictness 2` is an entity count; anything else (auto, strict, 60%) stays a string."""
    return int(value) if value.strip().lstrip("-").isdigit() else value


def wnut_file(folder: Path | None, name: str) -> Path:
    """A WNUT-17 file from --wnut, else from the configured data folder; a clear error when neither has it."""
    root = folder
    if root is None:
        data_dir = load_settings().data_dir
        root = data_dir / "wnut17" if data_dir else None
    if root is None:
        raise typer.BadParameter("where is WNUT-17? pass --wnut FOLDER or set LATENTSEARCH_DATA_DIR "
                                 "(the folder that holds wnut17/)", param_hint="--wnut")
    path = root / name
    if not path.is_file():
        raise typer.BadParameter(f"{path} not found (expected the WNUT-17 CoNLL files in {root})", param_hint="--wnut")
    return path


def fusion_options(fusion: str | None, weights: str | None) -> tuple[str | None, tuple[float, float] | None]:
    """--fusion / --weights as `Retriever.search` takes them; a bad value fails with what is supported.
    Weights alone mean min_max (the fusion that has weights)."""
    from latentsearch.cli.output import fail

    if fusion not in (None, "rrf", "min_max"):
        fail(f"--fusion must be rrf or min_max, got {fusion!r}")
    pair = None
    if weights is not None:
        try:
            pair = tuple(float(w) for w in weights.split(","))
        except ValueError:
            pair = ()
        if len(pair) != 2 or min(pair) < 0 or sum(pair) <= 0:
            fail("--weights takes two non-negative numbers: BM25,k-NN (e.g. 0.3,0.7)")
        if fusion == "rrf":
            fail("--weights applies to --fusion min_max (OpenSearch's RRF has no weights)")
        fusion = fusion or "min_max"
    return fusion, pair  # type: ignore[return-value]
