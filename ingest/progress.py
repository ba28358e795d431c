"""The ingest bar: records against the corpus total, moved per chunk while a batch is enriched.

Batches hold ~256 chunks and latent extraction takes seconds per few chunks, so a bar moved per batch sat
at 0 for minutes. The slow processor (`reports_chunks`, the latent one) reports each extraction
sub-batch; the bar then moves by the batch's records times the share of its chunks enriched, and its
description shows chunks enriched per second (the ETA column follows from the moving bar). Drawn on
stderr (latentsearch.progress), never on stdout: `--json` output stays pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from latentsearch.ingest.processors import Processor
from latentsearch.progress import progress_bar


class IngestBar:
    """`with IngestBar(enabled, index, total, processors, rejected) as bar:` then per batch
    `bar.start_batch(first_seq, last_seq, n_chunks)` ... `bar.end_batch(chunks_written)`."""

    def __init__(self, enabled: bool, index: str, total: int | None, processors: Sequence[Processor],
                 rejected: Callable[[], int]):
        self.index, self.total, self.rejected = index, total, rejected
        self._context = progress_bar(enabled)
        self._live: Any = None
        self._task: Any = None
        self._driver = next((p for p in processors if getattr(p, "reports_chunks", False)), None)
        self.enriched = 0  # chunks through the driving processor (or whole batches without one)
        self.chunks = 0  # chunks written
        self._started = time.perf_counter()
        self._from, self._to, self._size, self._in_batch = 0, 0, 0, 0

    def __enter__(self) -> IngestBar:
        self._live = self._context.__enter__()
        if self._live is not None:
            self._task = self._live.add_task(self._description(), total=self.total)
            if self._driver is not None:
                self._driver.progress = self._enriched
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._driver is not None:
            self._driver.progress = None
        self._context.__exit__(*exc)

    def start_batch(self, first_seq: int, last_seq: int, n_chunks: int) -> None:
        """A batch of records `first_seq`..`last_seq` (reader sequence numbers) holding `n_chunks` chunks."""
        self._from, self._to, self._size, self._in_batch = first_seq, last_seq, n_chunks, 0

    def end_batch(self, chunks_written: int) -> None:
        if self._driver is None:
            self.enriched += self._size
        self.chunks = chunks_written
        self._in_batch = self._size
        self._show()

    def _enriched(self, n: int) -> None:
        self.enriched += n
        self._in_batch = min(self._size, self._in_batch + n)
        self._show()

    @property
    def completed(self) -> float:
        """Records done, counting the current batch's records in proportion to its chunks enriched."""
        share = self._in_batch / self._size if self._size else 1.0
        return self._from + (self._to - self._from) * share

    def rate(self) -> float:
        """Chunks enriched per second since the start."""
        return self.enriched / max(time.perf_counter() - self._started, 1e-9)

    def _description(self) -> str:
        return (f"ingest → {self.index} ({self.chunks} chunks written, {self.enriched} enriched, "
                f"{self.rate():.1f} chunks/s, {self.rejected()} rejected)")

    def _show(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.completed, description=self._description())
