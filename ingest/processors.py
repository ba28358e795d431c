"""Enrichment processors: typed batch-in/batch-out steps with a content-hash cache.

A processor turns a batch of chunks into one output per chunk and writes it onto the chunk.
Outputs are cached by sha256(processor fingerprint + input text), so re-ingesting unchanged text
never runs the model again; changing the model (the fingerprint) invalidates the cache.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentsearch.cache import ContentCache, content_hash
from latentsearch.ingest.records import Chunk
from latentsearch.models.extractor import by_length


@dataclass
class ProcessorStats:
    computed: int = 0
    cached: int = 0


class Processor(ABC):
    """One enrichment step. Subclasses implement `compute` (batch) and `apply` (write onto a chunk)."""

    name: str = "processor"
    version: str = "1"
    #: True when `compute` calls `progress` as it goes (slow processors): the ingest bar follows it per chunk
    reports_chunks: bool = False

    def __init__(self) -> None:
        self.stats = ProcessorStats()
        self.progress: Callable[[int], None] | None = None  # set by the ingest bar: chunks newly enriched

    def _report(self, n: int) -> None:
        if n and self.progress is not None:
            self.progress(n)

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
        if self.reports_chunks:
            self._report(len(chunks) - len(todo))  # cached: enriched at once
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
    reports_chunks = True  # the slow step (an LLM call per few chunks): reported per extraction sub-batch

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
        """The texts in sub-batches of one model call each (the extractor's own grouping, so its outputs are
        unchanged), reporting each to `progress`. Texts of similar length share a sub-batch (longest first), so
        the padded prefix pass wastes little; outputs come back in the input order."""
        step = self._sub_batch()
        order = by_length(texts)
        out: list[Any] = [None] * len(texts)
        for i in range(0, len(texts), step):
            part = order[i: i + step]
            for k, value in zip(part, self._compute([texts[k] for k in part])):
                out[k] = value
            self._report(len(part))
        return out

    def _sub_batch(self) -> int:
        """Rows of one extractor call: `batch_size` texts, or with shared-prefix extraction (text-first adapter)
        `batch_size // free-text types` texts, each asked every type at once."""
        size = max(1, int(getattr(self.extractor, "batch_size", 16) or 16))
        free = sum(1 for t in self.schema.latent_types if not t.options)
        if hasattr(self.extractor, "extract_types") and getattr(self.extractor, "prompt_format", "") == "text-first":
            return max(1, size // max(1, free))
        return size

    def _compute(self, texts: list[str]) -> list[Any]:
        out: list[dict[str, list[str]]] = [{} for _ in texts]
        types = self.schema.latent_types
        if hasattr(self.extractor, "extract_types"):  # all types of a text at once (shared-prefix KV cache)
            per_type = self.extractor.extract_types(texts, self.schema.text_type,
                                                    [(t.prompt_name, t.options) for t in types])
        else:
            per_type = [self.extractor.extract(texts, self.schema.text_type, t.prompt_name, options=t.options)
                        for t in types]
        for etype, values in zip(types, per_type):
            for row, vals in zip(out, values):
                row[etype.name] = vals
        return out

    def apply(self, chunk: Chunk, output: Any) -> None:
        chunk.latent = {k: v for k, v in output.items() if v}
