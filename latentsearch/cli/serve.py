"""`serve`: the model server (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentsearch.cli.options import (
    settings_from_flags,
)
from latentsearch.cli.output import fail


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 to accept other machines (then set --api-key)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = 8080,
    api_key: Annotated[str | None, typer.Option(envvar="LATENTSEARCH_API_KEY", show_envvar=True,
                                                help="Require this key (Authorization: Bearer KEY or x-api-key: KEY) on every route but /healthz, /ui "
                                                     "(and /metrics with --metrics-public)")] = None,
    metrics_public: Annotated[bool, typer.Option("--metrics-public", help="Serve /metrics without the key (for a "
                                                 "Prometheus scraper that carries none); by default it needs the key")] = False,
    index: Annotated[str | None, typer.Option("--index", "-i", help="Index /search uses by default (default: config `index`)")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="embedded | opensearch | elasticsearch")] = None,
    url: Annotated[str | None, typer.Option(help="Cluster URL for /search, e.g. https://localhost:9200")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False, help="TOML/YAML config file")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts merged into one embedder call; 1 turns micro-batching off")] = 32,
    max_batch_llm: Annotated[int, typer.Option(min=1, help="Most prompts merged into one LLM call (chat, extract)")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a started batch waits for more requests (only while other clients are arriving)")] = 5.0,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Larger request bodies are refused with 413")] = 2 * 1024 * 1024,
    max_inputs: Annotated[int, typer.Option(min=1, help="Most texts per request; more are refused with 413")] = 256,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="Largest max_tokens a chat, /rag request may ask for")] = 512,
    max_prompt_chars: Annotated[int, typer.Option(min=100, help="Most characters one request puts into LLM prompts "
                                                  "(chat messages, /rag question, /extract texts); more get 413")] = 16_000,
    body_timeout_s: Annotated[float, typer.Option(min=0.1, help="Seconds to receive a request body (else 408)")] = 10.0,
    header_timeout_s: Annotated[float, typer.Option(min=0.1, help="Seconds to receive a request head (else closed)")] = 10.0,
    max_connections: Annotated[int, typer.Option(min=1, help="Concurrent connections; more get 503")] = 256,
    preload: Annotated[str, typer.Option(help="Models to load at start, comma-separated: embeddings,chat,extract,mentions "
                                               "('' = load each on first use)")] = "embeddings",
    mention_head: Annotated[Path | None, typer.Option(help="Mention projection head folder for /mentions "
                                                          "(default: the one `latentsearch train mention-head` writes)")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs/--plain-logs", help="One JSON object per log line")] = True,
) -> None:
    """Serve the models and search over HTTP (FastAPI + uvicorn; docs at /docs).

    OpenAI-compatible: POST /v1/embeddings, /v1/chat/completions
    (point the openai client, LangChain or an ML Commons connector at
    http://HOST:PORT/v1). Also POST /extract (latent entities),
    /mentions (mention vectors), /search (question -> hits),
    GET /healthz (no key), /metrics (Prometheus; needs the key unless
    --metrics-public). Concurrent requests are
    micro-batched per model; --max-batch 1 turns that off.

    Example: latentsearch serve --api-key secret --index papers

    curl localhost:8080/v1/embeddings -H 'x-api-key: secret'
    -H 'content-type: application/json' -d '{"input": "aspirin"}'
    """
    from pydantic import ValidationError

    from latentsearch.onnx_export.serve import ServeConfig, run

    try:
        settings = settings_from_flags(config, index, backend, url)
        cfg = ServeConfig(host=host, port=port, api_key=api_key or None, metrics_public=metrics_public, max_batch=max_batch, max_batch_llm=max_batch_llm,
                          batch_wait_ms=batch_wait_ms, max_body_bytes=max_body_bytes, max_inputs=max_inputs,
                          max_tokens_limit=max_tokens_limit, max_prompt_chars=max_prompt_chars,
                          body_timeout_s=body_timeout_s, header_timeout_s=header_timeout_s,
                          max_connections=max_connections, json_logs=json_logs, settings=settings, mention_head=mention_head,
                          preload=[p.strip() for p in preload.split(",") if p.strip()])
    except (ValidationError, ValueError, FileNotFoundError) as err:
        fail(str(err))
        return
    if host not in ("127.0.0.1", "localhost", "::1") and cfg.api_key is None:
        typer.echo(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True)
    run(cfg)


def register(app: typer.Typer) -> None:
    app.command()(serve)
