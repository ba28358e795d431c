"""Enrichment processors: typed batch-in/batch-out steps with a content-hash cache.

A processor turns a batch of chunks into one output per chunk and writes it onto the chunk.
Outputs are cached by sha256(processor fingerprint + input text), so re-ingesting unchanged text
never runs the model again; changing the model (the fingerprint) invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from latentsearch.ingest.records import Chunk


class ContentCache:
    """A small sqlite key-value store: (namespace, sha256) -> serialized output."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS cache (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
            "PRIMARY KEY (ns, key))"
        )
        self._lock = threading.Lock()

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(f"SELECT key, value FROM cache WHERE ns=? AND key IN ({marks})", [ns, *part])
                found.update((k, _decode(v)) for k, v in rows)
        return found

    def put_many(self, ns: str, items: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO cache (ns, key, value) VALUES (?, ?, ?)",
                [(ns, k, _encode(v)) for k, v in items.items()],
            )

    def close(self) -> None:
        self._conn.close()


def _encode(value: Any) -> bytes:
    if isinstance(value, np.ndarray):
        return b"F" + np.ascontiguousarray(value, dtype=np.float32).tobytes()
    return b"J" + json.dumps(value, ensure_ascii=False).encode("utf-8")


def _decode(blob: bytes) -> Any:
    if blob[:1] == b"F":
        return np.frombuffer(blob[1:], dtype=np.float32).copy()
    return json.loads(blob[1:].decode("utf-8"))


def content_hash(fingerprint: str, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\x00{text}".encode()).hexdigest()


@dataclass
class ProcessorStats:
    computed: int = 0
    cached: int = 0


class Processor(ABC):
    """One enrichment step. Subclasses implement `compute` (batch) and `apply` (write onto a chunk)."""

    name: str = "processor"
    version: str = "1"

    def __init__(self) -> None:
        self.stats = ProcessorStats()

    def fingerprint(self) -> str:
        """Identifies the outputs: change it when the model or its settings change."""
        return f"{self.name}:{self.version}"

    def input_text(self, chunk: Chunk) -> str:
        return chunk.text

    @abstractmethod
    def compute(self, texts: list[str]) -> list[Any]:
        """One output per text (a numpy array or a JSON-able value)."""

    @abstractmethod
    def apply(self, chunk: Chunk, output: Any) -> None:
        """Write the output onto the chunk."""

    def __call__(self, chunks: list[Chunk], cache: ContentCache | None = None) -> list[Chunk]:
        if not chunks:
            return chunks
        texts = [self.input_text(c) for c in chunks]
        fp = self.fingerprint()
        keys = [content_hash(fp, t) for t in texts]
        found = cache.get_many(fp, keys) if cache is not None else {}
        todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())
        if todo:
            outputs = self.compute([texts[i] for i in todo])
            if len(outputs) != len(todo):
                raise RuntimeError(f"processor {self.name} returned {len(outputs)} outputs for {len(todo)} inputs")
            fresh = {keys[i]: out for i, out in zip(todo, outputs)}
            if cache is not None:
                cache.put_many(fp, fresh)
            found.update(fresh)
        self.stats.computed += len(todo)
        self.stats.cached += len(chunks) - len(todo)
        for chunk, key in zip(chunks, keys):
            self.apply(chunk, found[key])
        return chunks


class EmbeddingProcessor(Processor):
    """Dense vectors for `vector`: the title (when present) and the chunk text, embedded together."""

    name = "embed"
    version = "1"

    def __init__(self, embedder, batch_size: int = 64):
        super().__init__()
        self.embedder = embedder
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return f"{self.name}:{self.version}:{self.embedder.name}:{self.embedder.dimension}"

    def input_text(self, chunk: Chunk) -> str:
        return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text

    def compute(self, texts: list[str]) -> list[Any]:
        return list(self.embedder.encode(texts, batch_size=self.batch_size))

    def apply(self, chunk: Chunk, output: Any) -> None:
        chunk.vector = np.asarray(output, dtype=np.float32)


class LatentEntityProcessor(Processor):
    """Latent entities for `latent.<type>`: every entity type of the index schema, extracted in
    batches by the LentEx extractor (closed label sets use constrained choice)."""

    name = "latent"
    version = "1"

    def __init__(self, extractor, schema, input: str = "chunk"):
        super().__init__()
        self.extractor = extractor
        self.schema = schema
        self.input = input

    def fingerprint(self) -> str:
        schema = hashlib.sha256(self.schema.model_dump_json().encode()).hexdigest()[:12]
        return f"{self.name}:{self.version}:{self.extractor.fingerprint}:{schema}:{self.input}"

    def input_text(self, chunk: Chunk) -> str:
        """`title` mode reads the document title once per document (chunks share the cache key)."""
        if self.input == "title" and chunk.title:
            return chunk.title
        return super().input_text(chunk)

    def compute(self, texts: list[str]) -> list[Any]:
        out: list[dict[str, list[str]]] = [{} for _ in texts]
        for etype in self.schema.latent_types:
            values = self.extractor.extract(texts, self.schema.text_type, etype.prompt_name, options=etype.options)
            for row, vals in zip(out, values):
                row[etype.name] = vals
        return out

    def apply(self, chunk: Chunk, output: Any) -> None:
        chunk.latent = {k: v for k, v in output.items() if v}
