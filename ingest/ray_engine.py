"""`latentsearch ingest --engine ray`: the local pipeline's stages on Ray Data, with the same guarantees.

Why Ray: extraction is the slow step by two orders of magnitude, and one machine's cores cap it. The
stages are the local ones, reused as they are: one read task runs the reader, the chunker and the
checkpoint-aware batching of `pipeline._batches` (a reader is sequential by nature: duplicate ids and
the checkpoint's item numbers need one pass over the file); an actor pool runs the processors (each actor
builds its embedder/extractor once); a second pool writes with `BulkWriter` (same ids `<doc>#<no>`,
retries, stale-chunk deletion). Every row of the dataset is one local batch (whole records, the same
chunk groups as the local path, so the same vectors and latent values).

Exactly once: the driver receives one row per *written* batch and advances the checkpoint only over the
contiguous prefix of written batches (Ray may finish them out of order). A crash leaves the checkpoint
at that prefix; the re-run rewrites the batches after it under the same ids (an overwrite, never a
duplicate). Rejects (reader and writer) travel in the rows and the driver writes the dead-letter file.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentsearch.backends import SearchBackend, open_backend
from latentsearch.cache import ContentCache
from latentsearch.config import Settings
from latentsearch.ingest.bulk import BulkWriter, DeadLetter
from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
from latentsearch.ingest.pipeline import (
    IngestReport,
    _batches,
    _delete_stale_chunks,
    default_processors,
    open_target,
    update_vocabulary_after_ingest,
)
from latentsearch.ingest.processors import EmbeddingProcessor, Processor
from latentsearch.ingest.readers import FieldMap, count_records, read_records
from latentsearch.ingest.records import Rejected
from latentsearch.models.embedder import Embedder
from latentsearch.models.factory import get_embedder
from latentsearch.progress import progress_bar

ProcessorsFactory = Callable[[Settings, Embedder], list[Processor]]
BackendFactory = Callable[[Settings], SearchBackend]

_NEEDS_RAY = ("`--engine ray` needs Ray Data: pip install 'latentsearch[ray]' (ray[data]); the supported engines "
              "are local (default) and ray")


def _open(settings: Settings) -> SearchBackend:
    return open_backend(settings.backend)


class _Collect(DeadLetter):
    """A dead letter that keeps its entries in memory: they travel to the driver inside the dataset rows."""

    def __init__(self) -> None:
        super().__init__(os.devnull)
        self.items: list[Rejected] = []

    def write(self, rejected: Rejected) -> None:
        self.items.append(rejected)
        self.count += 1

    def drain(self) -> bytes:
        out, self.items = self.items, []
        return pickle.dumps(out)


def _relabel(source_path: str | None, read_as: str, given: str) -> str | None:
    """Records read through the absolute path name the file as the caller gave it (as the local path does)."""
    if source_path is not None and read_as != given and source_path.startswith(read_as):
        return given + source_path[len(read_as):]
    return source_path


def _read_blocks(path: str, read_as: str, settings: Settings, fields: dict[str, Any], fmt: str | None,
                 limit: int | None, skip_through: int) -> Iterator[Any]:
    """The read task: reader -> chunker -> `_batches`, one pyarrow row per batch."""
    import pyarrow as pa

    embedder = get_embedder(settings.models.embedder, settings.models.device)
    chunk_tokens = settings.ingest.chunk_tokens or default_chunk_tokens(embedder.max_tokens)
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens, settings.ingest.chunk_overlap,
                           model_max_tokens=embedder.max_tokens)
    limits = {"max_depth": settings.backend.max_depth, "max_fields": settings.backend.max_fields,
              "max_field_chars": settings.backend.max_field_chars}
    target = max(settings.ingest.embed_batch_size * 4, 64)

    def items() -> Iterator[Any]:
        for item in read_records(read_as, format=fmt, fields=FieldMap(**fields), limit=limit):
            yield item.model_copy(update={"source_path": _relabel(item.source_path, read_as, path)})

    dead = _Collect()
    counters = {"read": 0, "skipped": 0, "chunks": 0}
    seen = {"read": 0, "skipped": 0}
    first = skip_through + 1
    for batch in _batches(items(), chunker, dead, skip_through, target, counters, limits):
        row = {"first_seq": [first], "last_seq": [batch.last_seq], "chunks": [pickle.dumps(batch.chunks)],
               "rejects": [dead.drain()], "read": [counters["read"] - seen["read"]],
               "skipped": [counters["skipped"] - seen["skipped"]]}
        seen = {"read": counters["read"], "skipped": counters["skipped"]}
        first = batch.last_seq + 1
        yield pa.table(row)
    if counters["skipped"] > seen["skipped"]:  # everything was settled already: report what was skipped
        yield pa.table({"first_seq": [first], "last_seq": [first - 1], "chunks": [pickle.dumps([])],
                        "rejects": [dead.drain()], "read": [0], "skipped": [counters["skipped"] - seen["skipped"]]})


def _datasource(path: str, read_as: str, settings: Settings, fields: dict[str, Any], fmt: str | None,
                limit: int | None, skip_through: int):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class IngestSource(Datasource):
        """One read task over the whole source (see the module docstring: a reader is one sequential pass)."""

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(read_as,))
            return [ReadTask(lambda: _read_blocks(path, read_as, settings, fields, fmt, limit, skip_through), meta)]

    return IngestSource()


def _rows(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    keys = list(batch)
    for i in range(len(batch[keys[0]])):
        yield {k: batch[k][i] for k in keys}


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


class _ProcessActor:
    """Builds the processors once (models load once per actor), then enriches one batch per call."""

    def __init__(self, settings: Settings, factory: ProcessorsFactory | None):
        self.embedder = get_embedder(settings.models.embedder, settings.models.device)
        self.processors = (factory or default_processors)(settings, self.embedder)
        self.cache = ContentCache(settings.cache_dir / "processors.sqlite") if settings.ingest.cache else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out = []
        for row in _rows(batch):
            chunks = pickle.loads(row["chunks"])
            embed = next((p for p in self.processors if isinstance(p, EmbeddingProcessor)), None)
            before = (embed.stats.computed, embed.stats.cached) if embed else (0, 0)
            for proc in self.processors:
                proc(chunks, self.cache)
            after = (embed.stats.computed, embed.stats.cached) if embed else (0, 0)
            out.append({**row, "chunks": pickle.dumps(chunks), "computed": after[0] - before[0],
                        "cached": after[1] - before[1]})
        return _columns(out)


class _WriteActor:
    """Opens the backend once and bulk-writes one batch per call; rejects travel back to the driver."""

    def __init__(self, settings: Settings, index: str, created: bool, factory: BackendFactory | None):
        self.backend = (factory or _open)(settings)
        self.index, self.created = index, created
        self.dead = _Collect()
        self.writer = BulkWriter(self.backend, index, self.dead, batch_size=settings.ingest.write_batch_size,
                                 max_retries=settings.ingest.max_retries,
                                 backoff_initial_s=settings.ingest.backoff_initial_s,
                                 backoff_max_s=settings.ingest.backoff_max_s)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out = []
        for row in _rows(batch):
            chunks = pickle.loads(row["chunks"])
            stats = self.writer.write(chunks)
            stale = _delete_stale_chunks(self.backend, self.index, chunks) if chunks and not self.created else 0
            rejects = pickle.loads(row["rejects"]) + pickle.loads(self.dead.drain())
            out.append({"first_seq": row["first_seq"], "last_seq": row["last_seq"], "chunks": len(chunks),
                        "rejects": pickle.dumps(rejects), "read": row["read"], "skipped": row["skipped"],
                        "computed": row["computed"], "cached": row["cached"], "written": stats.written,
                        "retries": stats.retries, "stale": stale})
        return _columns(out)


class _RaySession:
    """Use the running Ray, or start one: `address` (or RAY_ADDRESS) joins a cluster, else a local one."""

    def __init__(self, address: str | None, num_cpus: int | None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.started = False

    def __enter__(self) -> _RaySession:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, **kwargs)
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def ray_ingest(
    path: str | Path,
    settings: Settings,
    *,
    index: str | None = None,
    fields: FieldMap | dict[str, Any] | None = None,
    fmt: str | None = None,
    limit: int | None = None,
    resume: bool = True,
    dead_letter_path: str | Path | None = None,
    progress: bool = True,
    on_progress: Callable[[int], None] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    writers: int = 1,
    processors_factory: ProcessorsFactory | None = None,
    backend_factory: BackendFactory | None = None,
) -> IngestReport:
    """`pipeline.ingest` on Ray Data (the CLI's `ingest --engine ray`). `address`: a Ray cluster (`ray://head:10001`, `auto`; default RAY_ADDRESS,
    else a local Ray with `num_cpus`); `actors`: processor actors (default: the cluster's CPUs - 1, at least 1);
    `writers`: writer actors. The factories build processors/backends inside the actors (default: the
    configured ones); they must be importable by the workers."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RuntimeError(_NEEDS_RAY) from err
    started = time.perf_counter()
    # Ray first: starting it forks its processes, which must happen before this process opens LanceDB
    with _RaySession(address, num_cpus):
        report = _run(ray, path, settings, index=index, fields=fields, fmt=fmt, limit=limit, resume=resume,
                      dead_letter_path=dead_letter_path, progress=progress, on_progress=on_progress, actors=actors,
                      writers=writers, processors_factory=processors_factory, backend_factory=backend_factory,
                      started=started)
    return report


def _run(ray: Any, path: str | Path, settings: Settings, *, index: str | None, fields: FieldMap | dict[str, Any] | None,
         fmt: str | None, limit: int | None, resume: bool, dead_letter_path: str | Path | None, progress: bool,
         on_progress: Callable[[int], None] | None, actors: int | None, writers: int,
         processors_factory: ProcessorsFactory | None, backend_factory: BackendFactory | None,
         started: float) -> IngestReport:
    index = index or settings.index
    backend = (backend_factory or _open)(settings)
    embedder = get_embedder(settings.models.embedder, settings.models.device)
    created, mapping_schema, checkpoint, dead = open_target(backend, settings, index, embedder, path,
                                                            resume=resume, dead_letter_path=dead_letter_path)
    resumed_from = checkpoint.line
    fm = fields if isinstance(fields, FieldMap) else FieldMap(**(fields or {}))
    totals = {"read": 0, "skipped": 0, "chunks": 0, "written": 0, "retries": 0, "computed": 0, "cached": 0,
              "stale": 0}
    total = _safe_count(path, fmt) if progress else None

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = actors or max(1, cpus - 1)
    ds = ray.data.read_datasource(
        _datasource(str(path), str(Path(path).resolve()), settings, fm.model_dump(), fmt, limit, checkpoint.line),
        num_cpus=0.25,
    )
    ds = ds.map_batches(_ProcessActor, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=pool),
                        fn_constructor_args=(settings, processors_factory), num_cpus=1)
    ds = ds.map_batches(_WriteActor, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=writers),
                        fn_constructor_args=(settings, index, created, backend_factory), num_cpus=0.25)
    written: dict[int, tuple[int, int]] = {}  # first_seq -> (last_seq, chunks), waiting for their predecessors
    with progress_bar(progress) as live:
        task = live.add_task(f"ingest (ray) → {index}", total=total) if live else None
        for row in ds.iter_rows():
            for rejected in pickle.loads(row["rejects"]):
                dead.write(rejected)
            for key in ("read", "skipped", "chunks", "written", "retries", "computed", "cached", "stale"):
                totals[key] += int(row[key])
            written[int(row["first_seq"])] = (int(row["last_seq"]), int(row["chunks"]))
            moved = False
            while checkpoint.line + 1 in written:  # the contiguous prefix is settled
                last, n = written.pop(checkpoint.line + 1)
                checkpoint.line = max(checkpoint.line, last)
                checkpoint.written += n
                moved = True
            if moved:
                checkpoint.save()
                if live is not None:
                    live.update(task, completed=checkpoint.line,
                                description=f"ingest (ray) → {index} ({totals['chunks']} chunks, "
                                            f"{dead.count} rejected)")
                if on_progress:
                    on_progress(checkpoint.line)
    if written:
        raise RuntimeError(f"ray ingest ended with unsettled batches after item {checkpoint.line}: "
                           f"{sorted(written)}; re-run to resume from the checkpoint")
    backend.refresh(index)
    concepts = update_vocabulary_after_ingest(backend, index, settings, mapping_schema, embedder)
    dead.close()
    seconds = time.perf_counter() - started
    return IngestReport(
        index=index,
        backend=backend.kind,
        source=str(path),
        records_read=totals["read"],
        records_skipped_by_checkpoint=totals["skipped"],
        chunks=totals["chunks"],
        chunks_written=totals["written"],
        rejected=dead.count,
        retries=totals["retries"],
        embeddings_computed=totals["computed"],
        embeddings_cached=totals["cached"],
        seconds=round(seconds, 3),
        docs_per_s=round(totals["read"] / seconds, 2) if seconds else 0.0,
        chunks_per_s=round(totals["chunks"] / seconds, 2) if seconds else 0.0,
        dead_letter=str(dead.path) if dead.count else None,
        stale_chunks_deleted=totals["stale"],
        resumed_from_item=resumed_from,
        vocabulary_concepts=concepts,
    )


def _safe_count(path: str | Path, fmt: str | None) -> int | None:
    try:
        return count_records(path, fmt)
    except Exception:
        return None
