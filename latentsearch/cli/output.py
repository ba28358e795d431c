"""What every command prints and how it fails: one stdout console for results (and `--json`), one
stderr console for messages, and one translation of library errors into a red `error:` line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}")  # a message is text, never markup ('^*$', '[x]')
    raise typer.Exit(code)


def run(fn: Callable[[], T]) -> T | None:
    """Call `fn`; the errors a user can fix (backend, missing model, bad value, missing file) become one line."""
    from latentsearch.backends.base import BackendError
    from latentsearch.models.registry import ModelNotFoundError

    try:
        return fn()
    except (BackendError, ModelNotFoundError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    return None


def print_explanation(ex: Any) -> None:
    table = Table(title="latent entities of the question")
    for col in ("type", "extracted", "index values matched"):
        table.add_column(col)
    for m in ex.entities + ex.unmapped:
        table.add_row(m.type, m.extracted, ", ".join(f"{v} ({h})" for v, h in m.how.items()) or "[dim](none in the index)[/]")
    stdout.print(table)
    levels = Table(title=f"strictness {ex.strictness} · floor {ex.floor if ex.floor is None else round(ex.floor, 4)}")
    for col in ("minimum_should_match", "documents", "above floor", ""):
        levels.add_column(col)
    for lv in ex.levels:
        levels.add_row("no filter" if lv.msm is None else str(lv.msm), str(lv.hits), str(lv.above_floor),
                       "← chosen" if lv.msm == ex.chosen_msm else "")
    stdout.print(levels)
    stdout.print(f"[bold]why:[/] {ex.reason}   ·   " + ", ".join(f"{k} {v:.0f} ms" for k, v in ex.timings_ms.items()))


def print_hits(result: Any) -> None:
    total = f"{result.total} matching chunks · " if hasattr(result, "total") else ""
    table = Table(title=f"{total}{result.took_ms:.0f} ms · {result.mode} · {result.index}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc")
    table.add_column("title / text")
    for rank, hit in enumerate(result.hits, 1):
        snippet = (hit.title + " — " if hit.title else "") + hit.text
        table.add_row(str(rank), f"{hit.score:.4f}", f"{hit.doc_id}#{hit.chunk}", snippet[:160] + ("…" if len(snippet) > 160 else ""))
    stdout.print(table)
