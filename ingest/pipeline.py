"""The ingest job: reader -> chunker -> processors -> bulk writer, resumable, with a progress bar.

    from latentsearch import load_settings
    from latentsearch.ingest.pipeline import ingest
    report = ingest("corpus.jsonl", load_settings(index="papers"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from latentsearch import dsl
from latentsearch.backends import BulkAction, SearchBackend, open_backend
from latentsearch.cache import ContentCache
from latentsearch.config import Settings
from latentsearch.ingest.bulk import BulkWriter, Checkpoint, DeadLetter
from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
from latentsearch.ingest.processors import EmbeddingProcessor, Processor
from latentsearch.ingest.progress import IngestBar
from latentsearch.ingest.readers import FieldMap, count_records, read_records
from latentsearch.ingest.records import Chunk, Rejected, SourceRecord, record_problem
from latentsearch.mappings import index_body, schema_from_mapping
from latentsearch.models.embedder import Embedder
from latentsearch.models.factory import get_embedder


class IngestReport(BaseModel):
    """The final summary (also the `--json` output of `latentsearch ingest`)."""

    index: str
    backend: str
    source: str
    records_read: int
    records_skipped_by_checkpoint: int  # reader items (records and rejects) settled by an earlier run
    chunks: int
    chunks_written: int
    rejected: int
    retries: int
    embeddings_computed: int
    embeddings_cached: int
    seconds: float
    docs_per_s: float
    chunks_per_s: float
    dead_letter: str | None
    stale_chunks_deleted: int = 0  # chunks of re-ingested documents that now have fewer chunks
    resumed_from_item: int
    vocabulary_concepts: int | None = None  # concepts in the updated value vocabulary (None: not updated)


class IndexMismatchError(ValueError):
    pass


def ensure_index(backend: SearchBackend, settings: Settings, index: str, embedder: Embedder) -> bool:
    """Create the index from the entity schema, or check that an existing one fits this embedder."""
    if backend.index_exists(index):
        meta = (backend.get_mapping(index).get("_meta") or {}).get("latentsearch") or {}
        dim = meta.get("dimension")
        name = meta.get("embedder")
        if name and name != embedder.name:
            raise IndexMismatchError(
                f"index `{index}` was built with the embedder {name!r}, not {embedder.name!r}: vectors from two "
                "models do not mix; use the same embedder or a new index name"
            )
        if dim is not None and int(dim) != embedder.dimension:
            raise IndexMismatchError(
                f"index `{index}` holds {dim}-d vectors but the embedder {embedder.name!r} makes "
                f"{embedder.dimension}-d ones: use the same embedder or a new index name"
            )
        return False
    body = index_body(
        backend.kind,  # type: ignore[arg-type]
        settings.entities,
        dimension=embedder.dimension,
        vector=settings.vector,
        embedder=embedder.name,
        text=settings.text,
    )
    backend.create_index(index, body)
    return True


def default_processors(settings: Settings, embedder: Embedder) -> list[Processor]:
    """Dense vectors always; latent entities when the schema has types and `ingest.latent` is on."""
    processors: list[Processor] = [EmbeddingProcessor(embedder, batch_size=settings.ingest.embed_batch_size)]
    if settings.ingest.latent and settings.entities.latent_types:
        from latentsearch.ingest.processors import LatentEntityProcessor
        from latentsearch.models.factory import extractor_from_settings

        extractor = extractor_from_settings(settings.models, batch_size=settings.ingest.extract_batch_size)
        processors.append(LatentEntityProcessor(extractor, settings.entities, input=settings.ingest.latent_input))
    if settings.ingest.mentions:  # per-mention type-aware vectors, off by default: an LLM pass per chunk
        from latentsearch.ingest.mentions import mention_processor

        processors.append(mention_processor(settings))
    if settings.ingest.links:  # entity links against `models.kb`, off by default
        from latentsearch.ingest.links import link_processor

        processors.append(link_processor(settings))
    return processors


@dataclass
class _Batch:
    records: list[SourceRecord] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    last_seq: int = 0


def _batches(items: Iterator[SourceRecord | Rejected], chunker: TokenChunker, dead: DeadLetter,
             skip_through: int, target_chunks: int, counters: dict[str, int],
             limits: dict[str, int]) -> Iterator[_Batch]:
    """Group whole records into batches of about `target_chunks` chunks. A record never straddles
    two batches, so the checkpoint (the reader's item sequence number, which is deterministic for
    every format) advances record by record."""
    batch = _Batch()
    for seq, item in enumerate(items, start=1):
        if seq <= skip_through:
            counters["skipped"] += 1
            continue
        batch.last_seq = seq
        if isinstance(item, Rejected):
            dead.write(item)
            continue
        counters["read"] += 1
        problem = record_problem(item, **limits)
        if problem:
            dead.write(Rejected(reason=f"line {item.line}: {problem}", source_path=item.source_path, line=item.line,
                                id=item.id, raw=item.text[:2000], stage="read"))
            continue
        try:
            chunks = chunker.chunk(item)
        except Exception as err:
            dead.write(Rejected(reason=f"chunking failed: {err}", source_path=item.source_path, line=item.line,
                                id=item.id, raw=item.text[:2000], stage="chunk"))
            continue
        batch.records.append(item)
        batch.chunks.extend(chunks)
        if len(batch.chunks) >= target_chunks:
            yield batch
            batch = _Batch()
    if batch.last_seq:
        yield batch


def open_target(backend: SearchBackend, settings: Settings, index: str, embedder: Embedder, path: str | Path, *,
                resume: bool, dead_letter_path: str | Path | None) -> tuple[bool, Any, Checkpoint, DeadLetter]:
    """What every ingest engine does before reading: create the index if needed and refuse a different entity
    schema, load the checkpoint (reset when not resuming or the index is new) and open the dead letter.
    Returns (created, the index's entity schema, checkpoint, dead letter)."""
    created = ensure_index(backend, settings, index, embedder)
    mapping_schema = schema_from_mapping(backend.get_mapping(index))
    if mapping_schema is not None and mapping_schema != settings.entities and settings.entities.latent_types:
        raise IndexMismatchError(
            f"index `{index}` was created with a different entity schema ({mapping_schema.type_names}); "
            "ingest with that schema or into a new index"
        )
    target = f"{backend.kind}:{settings.backend.url or settings.backend.resolved_embedded_path}"
    checkpoint = Checkpoint.load(settings.home, path, index, target)
    if not resume or created:  # a new (or re-created) index has none of the earlier progress
        checkpoint.line = 0
        checkpoint.written = 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dead = DeadLetter(dead_letter_path or settings.home / "deadletter" / f"{index}-{stamp}.jsonl")
    return created, mapping_schema, checkpoint, dead


def ingest(
    path: str | Path,
    settings: Settings,
    *,
    index: str | None = None,
    fields: FieldMap | dict[str, Any] | None = None,
    fmt: str | None = None,
    limit: int | None = None,
    resume: bool = True,
    dead_letter_path: str | Path | None = None,
    backend: SearchBackend | None = None,
    processors: list[Processor] | None = None,
    progress: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest a corpus into an index; safe to re-run (resumes from the checkpoint, overwrites by id)."""
    index = index or settings.index
    started = time.perf_counter()
    backend = backend or open_backend(settings.backend)
    embedder = get_embedder(settings.models.embedder, settings.models.device)
    created, mapping_schema, checkpoint, dead = open_target(backend, settings, index, embedder, path,
                                                            resume=resume, dead_letter_path=dead_letter_path)
    resumed_from = checkpoint.line
    chunk_tokens = settings.ingest.chunk_tokens or default_chunk_tokens(embedder.max_tokens)
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens, settings.ingest.chunk_overlap,
                           model_max_tokens=embedder.max_tokens)
    if processors is None:
        processors = default_processors(settings, embedder)
    cache = ContentCache(settings.cache_dir / "processors.sqlite") if settings.ingest.cache else None

    target = f"{backend.kind}:{settings.backend.url or settings.backend.resolved_embedded_path}"
    writer = BulkWriter(
        backend, index, dead,
        batch_size=settings.ingest.write_batch_size,
        max_retries=settings.ingest.max_retries,
        backoff_initial_s=settings.ingest.backoff_initial_s,
        backoff_max_s=settings.ingest.backoff_max_s,
    )
    counters = {"read": 0, "skipped": 0, "chunks": 0, "stale_deleted": 0}
    total = _safe_count(path, fmt) if progress else None
    with IngestBar(progress, index, total, processors, lambda: dead.count) as bar:
        items = read_records(path, format=fmt, fields=fields or FieldMap(), limit=limit)
        target = max(settings.ingest.embed_batch_size * 4, 64)
        limits = {"max_depth": settings.backend.max_depth, "max_fields": settings.backend.max_fields,
                  "max_field_chars": settings.backend.max_field_chars}
        for batch in _batches(items, chunker, dead, checkpoint.line, target, counters, limits):
            bar.start_batch(checkpoint.line, batch.last_seq, len(batch.chunks))
            for proc in processors:
                proc(batch.chunks, cache)
            writer.write(batch.chunks)
            if not created:
                counters["stale_deleted"] += _delete_stale_chunks(backend, index, batch.chunks)
            counters["chunks"] += len(batch.chunks)
            checkpoint.line = max(checkpoint.line, batch.last_seq)
            checkpoint.written += len(batch.chunks)
            checkpoint.save()
            done = batch.last_seq
            bar.end_batch(counters["chunks"])
            if on_progress:
                on_progress(done)
    backend.refresh(index)
    concepts = update_vocabulary_after_ingest(backend, index, settings, mapping_schema, embedder)
    dead.close()
    if cache is not None:
        cache.close()
    seconds = time.perf_counter() - started
    embed = next((p for p in processors if isinstance(p, EmbeddingProcessor)), None)
    processed = counters["read"]
    return IngestReport(
        index=index,
        backend=backend.kind,
        source=str(path),
        records_read=counters["read"],
        records_skipped_by_checkpoint=counters["skipped"],
        chunks=counters["chunks"],
        chunks_written=writer.stats.written,
        rejected=dead.count,
        retries=writer.stats.retries,
        embeddings_computed=embed.stats.computed if embed else 0,
        embeddings_cached=embed.stats.cached if embed else 0,
        seconds=round(seconds, 3),
        docs_per_s=round(processed / seconds, 2) if seconds else 0.0,
        chunks_per_s=round(counters["chunks"] / seconds, 2) if seconds else 0.0,
        dead_letter=str(dead.path) if dead.count else None,
        stale_chunks_deleted=counters["stale_deleted"],
        resumed_from_item=resumed_from,
        vocabulary_concepts=concepts,
    )


def _delete_stale_chunks(backend: SearchBackend, index: str, chunks: list[Chunk]) -> int:
    """A re-ingested document that got shorter leaves chunks numbered >= its new count: delete them,
    so that re-runs overwrite instead of leaving old text behind."""
    counts: dict[str, int] = {}
    for c in chunks:
        counts[c.doc_id] = c.count
    should = [dsl.bool_query(filter=[dsl.term("doc_id", d), dsl.range_("chunk.no", gte=n)]) for d, n in counts.items()]
    stale: list[str] = []
    for i in range(0, len(should), 256):
        body = {"query": dsl.bool_query(should=should[i : i + 256]), "size": 10_000, "_source": False}
        stale += [h["_id"] for h in backend.search(index, body)["hits"]["hits"]]
    if stale:
        backend.bulk(index, [BulkAction(id=s, op="delete") for s in stale])
    return len(stale)


def _safe_count(path: str | Path, fmt: str | None) -> int | None:
    try:
        return count_records(path, fmt)
    except Exception:
        return None


def update_vocabulary_after_ingest(backend: SearchBackend, index: str, settings: Settings, schema: Any,
                                   embedder: Any) -> int | None:
    """The value vocabulary brought up to date at the end of an ingest that extracted latent values (every
    engine runs this); the number of concepts, or None when it was not updated."""
    if not (settings.ingest.vocabulary and settings.ingest.latent and schema and schema.latent_types):
        return None
    from latentsearch.ingest.vocabulary import update_index_vocabulary

    vocab = update_index_vocabulary(backend, index, embedder)
    return sum(len(cs) for cs in vocab.concepts.values())
