"""Bulk writing that loses nothing: retries with backoff, a dead-letter file, and a resumable checkpoint.

Like opensearch-py's `helpers.streaming_bulk`, chunks stream in fixed-size batches; a whole
request failing with 429/5xx/connection errors is retried with exponential backoff and jitter,
items rejected with a retryable status are re-sent alone, and items rejected for good go to the
dead-letter JSONL with their reason and source line. Ids are `<doc id>#<chunk no>`, so a re-run
overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from latentsearch.backends.base import BulkAction, SearchBackend, TransientBackendError
from latentsearch.ingest.records import Chunk, Rejected


class DeadLetter:
    """Append-only JSONL of rejected records, opened lazily (no file when nothing was rejected)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self._fh = None

    def write(self, rejected: Rejected) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        try:
            line = rejected.model_dump_json(exclude_none=True)
        except ValueError:  # lone surrogates: JSON text cannot hold them raw, so escape (\\udXXX) everything
            line = json.dumps(rejected.model_dump(exclude_none=True), ensure_ascii=True)
        self._fh.write(line + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class Checkpoint:
    """Progress of one (source, index) ingest: every reader item (record or reject) up to sequence
    number `line` is settled, i.e. written or dead-lettered. Saved atomically after each batch."""

    path: Path
    source: str
    index: str
    fingerprint: str
    line: int = 0
    written: int = 0

    @staticmethod
    def location(home: Path, source: str | Path, index: str, target: str = "") -> Path:
        """One file per (source, index, backend target): the same file ingested into a same-named
        index on another cluster has its own progress."""
        key = hashlib.sha256(f"{Path(source).resolve()}\x00{index}\x00{target}".encode()).hexdigest()[:16]
        return home / "checkpoints" / f"{index}-{key}.json"

    @staticmethod
    def forget_index(home: Path, index: str) -> int:
        """Delete every checkpoint of `index` (and only of it); returns how many."""
        pattern = re.compile(rf"^{re.escape(index)}-[0-9a-f]{{16}}\.json$")
        gone = 0
        for path in (home / "checkpoints").glob(f"{index}-*.json"):
            if pattern.match(path.name):
                path.unlink(missing_ok=True)
                gone += 1
        return gone

    @staticmethod
    def recorded_writes(home: Path, index: str) -> int | None:
        """Chunks the checkpoints of `index` recorded as written (None when it has none)."""
        pattern = re.compile(rf"^{re.escape(index)}-[0-9a-f]{{16}}\.json$")
        total, found = 0, False
        for path in (home / "checkpoints").glob(f"{index}-*.json"):
            if pattern.match(path.name):
                try:
                    total += int(json.loads(path.read_text(encoding="utf-8")).get("written", 0))
                    found = True
                except (ValueError, OSError):
                    continue
        return total if found else None

    @staticmethod
    def source_fingerprint(source: str | Path) -> str:
        """A hash of the source's content (of every file, with its relative name, for a folder): an
        edited file starts over even when its size and whole-second mtime did not change."""
        p = Path(source)
        digest = hashlib.sha256()
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if p.is_dir():
                digest.update(f"\x00{f.relative_to(p)}\x00".encode("utf-8", "surrogateescape"))
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()[:32]

    @classmethod
    def load(cls, home: Path, source: str | Path, index: str, target: str = "") -> Checkpoint:
        path = cls.location(home, source, index, target)
        fp = cls.source_fingerprint(source)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("fingerprint") == fp:
                    return cls(path, str(source), index, fp, int(data.get("line", 0)), int(data.get("written", 0)))
            except (ValueError, OSError):
                pass
        return cls(path, str(source), index, fp)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {"source": self.source, "index": self.index, "fingerprint": self.fingerprint,
                   "line": self.line, "written": self.written}
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class WriteStats:
    written: int = 0
    failed: int = 0
    retries: int = 0


class BulkWriter:
    """Write chunks to an index in batches; nothing is dropped without a dead-letter entry."""

    def __init__(
        self,
        backend: SearchBackend,
        index: str,
        dead_letter: DeadLetter,
        *,
        batch_size: int = 256,
        max_retries: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.backend = backend
        self.index = index
        self.dead_letter = dead_letter
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep
        self.stats = WriteStats()

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_initial_s * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    def write(self, chunks: Sequence[Chunk]) -> WriteStats:
        """Write all chunks (in sub-batches); returns the stats of this call."""
        before = WriteStats(self.stats.written, self.stats.failed, self.stats.retries)
        for i in range(0, len(chunks), self.batch_size):
            self._write_batch(list(chunks[i : i + self.batch_size]))
        return WriteStats(
            self.stats.written - before.written, self.stats.failed - before.failed, self.stats.retries - before.retries
        )

    def _write_batch(self, chunks: list[Chunk]) -> None:
        pending = {c.id: c for c in chunks}
        attempt = 0
        last_error = ""
        while pending:
            actions = [BulkAction(id=cid, source=c.to_source()) for cid, c in pending.items()]
            try:
                results = self.backend.bulk(self.index, actions)
            except TransientBackendError as err:
                last_error = str(err)
                results = None
            if results is not None:
                retry: dict[str, Chunk] = {}
                for res in results:
                    chunk = pending[res.id]
                    if res.ok:
                        self.stats.written += 1
                    elif res.retryable:
                        retry[res.id] = chunk
                        last_error = res.error or f"status {res.status}"
                    else:
                        self._reject(chunk, f"{res.error_type or 'error'}: {res.error}")
                pending = retry
                if not pending:
                    return
            if attempt >= self.max_retries:
                for chunk in pending.values():
                    self._reject(chunk, f"gave up after {attempt} retries: {last_error}")
                return
            self.stats.retries += 1
            self.sleep(self._backoff(attempt))
            attempt += 1

    def _reject(self, chunk: Chunk, reason: str) -> None:
        self.stats.failed += 1
        self.dead_letter.write(
            Rejected(reason=reason, source_path=chunk.source_path, line=chunk.line, id=chunk.id,
                     raw=chunk.text[:2000], stage="write")
        )

