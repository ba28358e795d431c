"""One rich progress bar style for long jobs (ingest, training); a no-op when disabled."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


def progress_bar(enabled: bool = True) -> AbstractContextManager[Any]:
    """A `rich.progress.Progress` (description, bar, n/total, elapsed, remaining) or `nullcontext(None)`."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())
