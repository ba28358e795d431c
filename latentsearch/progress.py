"""One rich progress bar style for long jobs (ingest, training); a no-op when disabled."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


def progress_bar(enabled: bool = True) -> AbstractContextManager[Any]:
    """A `rich.progress.Progress` (description, bar, n/total, elapsed, remaining) or `nullcontext(None)`."""
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # stderr: stdout carries results (`--json` output must parse as a whole)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True))


def track(items: list[Any], description: str, enabled: bool = True):
    """Iterate over `items` under a progress bar (plain iteration when disabled)."""
    with progress_bar(enabled) as bar:
        task = bar.add_task(description, total=len(items)) if bar is not None else None
        for item in items:
            yield item
            if bar is not None:
                bar.advance(task)
