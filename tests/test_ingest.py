"""Ingest end to end on the embedded engine with the real MiniLM embedder: chunking, the content
cache, bad input to the dead letter, retries, and crash-resume without duplicates or losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latentsearch.backends.base import BulkAction, BulkItemResult, TransientBackendError
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.cache import ContentCache
from latentsearch.config import load_settings
from latentsearch.ingest.bulk import BulkWriter, DeadLetter
from latentsearch.ingest.chunking import TokenChunker, default_chunk_tokens
from latentsearch.ingest.pipeline import IndexMismatchError, ingest
from latentsearch.ingest.processors import EmbeddingProcessor
from latentsearch.ingest.records import Chunk, SourceRecord


def _write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _sample_lines(scifact_sample: Path, n: int) -> list[bytes]:
    return scifact_sample.read_bytes().splitlines()[:n]


def _all_ids(backend: EmbeddedBackend, index: str) -> list[str]:
    res = backend.search(index, {"query": {"match_all": {}}, "size": 100_000, "_source": False})
    return [h["_id"] for h in res["hits"]["hits"]]


# ------------------------------------------------------------------ chunking


def test_chunker_windows_are_token_exact_with_overlap(embedder) -> None:
    chunker = TokenChunker(embedder.tokenizer, size=50, overlap=10)
    text = " ".join(f"word{i} alpha-beta" for i in range(120))
    record = SourceRecord(id="d", text=text)
    chunks = chunker.chunk(record)
    assert len(chunks) > 3 and all(c.count == len(chunks) for c in chunks)
    offsets = chunker.token_offsets(text)
    for c in chunks:
        assert c.text == text[c.start : c.end]
        n_tokens = len(embedder.tokenizer(c.text, add_special_tokens=False)["input_ids"])
        assert n_tokens <= 50
    # consecutive chunks share exactly `overlap` tokens
    starts = [i for i, (a, _) in enumerate(offsets) if a in {c.start for c in chunks}]
    assert all(b - a == 40 for a, b in zip(starts, starts[1:]))
    assert chunks[-1].end == offsets[-1][1]
    assert [c.id for c in chunks[:2]] == ["d#0", "d#1"]


def test_default_chunk_size_fits_the_embedder(embedder) -> None:
    assert embedder.max_tokens == 256
    assert default_chunk_tokens(embedder.max_tokens) == 224  # min(512 as in LentEx, 256 - title reserve)
    assert default_chunk_tokens(8192) == 512


def test_long_document_spans_cover_it_across_tokenizer_windows(embedder) -> None:
    chunker = TokenChunker(embedder.tokenizer, size=224, overlap=10)
    text = ("The quick brown fox jumps over the lazy dog near the riverbank. " * 16_000)[: 1024 * 1024]
    spans = chunker.spans(text)  # > 5 tokenizer windows of 200k characters
    assert spans[0][0] == 0 and spans[-1][1] >= len(text.rstrip()) - 1
    assert len(spans) > 900
    assert all(a < b for a, b in spans) and all(b1 > a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # overlaps


# ------------------------------------------------------------------ processors and cache


def test_embedding_cache_skips_unchanged_text(embedder, tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "c.sqlite")
    proc = EmbeddingProcessor(embedder, batch_size=8)
    chunks = [Chunk(doc_id=str(i), no=0, count=1, text=f"text number {i}", start=0, end=10) for i in range(5)]
    proc(chunks, cache)
    first = [c.vector.copy() for c in chunks]
    again = [Chunk(doc_id=str(i), no=0, count=1, text=f"text number {i}", start=0, end=10) for i in range(6)]
    again[5].text = "a new text"
    proc(again, cache)
    assert proc.stats.computed == 6 and proc.stats.cached == 5
    for a, b in zip(first, again):
        np.testing.assert_allclose(a, b.vector)
    assert abs(np.linalg.norm(again[0].vector) - 1.0) < 1e-5


# ------------------------------------------------------------------ the pipeline


def test_ingest_and_search_real_abstracts(home: Path, scifact_sample: Path, embedder) -> None:
    corpus = _write_jsonl(home.parent / "c.jsonl", _sample_lines(scifact_sample, 30))
    settings = load_settings(index="sci")
    report = ingest(corpus, settings, progress=False)
    assert report.records_read == 30 and report.rejected == 0
    assert report.chunks == report.chunks_written > 30  # abstracts longer than one chunk are split
    backend = EmbeddedBackend(home / "db")
    ids = _all_ids(backend, "sci")
    assert len(ids) == len(set(ids)) == report.chunks
    first = json.loads(_sample_lines(scifact_sample, 1)[0])
    vec = embedder.encode([first["title"]])[0].tolist()
    res = backend.search("sci", {"query": {"knn": {"vector": {"vector": vec, "k": 3}}}, "size": 3})
    assert res["hits"]["hits"][0]["_source"]["doc_id"] == first["_id"]  # its own title finds it
    # a second run resumes: nothing re-read, nothing duplicated
    again = ingest(corpus, settings, progress=False)
    assert again.records_skipped_by_checkpoint == 30 and again.chunks == 0
    assert len(_all_ids(backend, "sci")) == report.chunks


def test_bad_input_goes_to_dead_letter_and_the_rest_lands(home: Path, scifact_sample: Path) -> None:
    good = _sample_lines(scifact_sample, 4)
    lines = [
        good[0],
        b'{"_id": "broken", "text": "unterminated',  # line 2: malformed JSON
        json.dumps({"_id": "notext", "title": "only a title"}).encode(),  # line 3: missing text
        good[1],
        b'{"_id": "latin1", "text": "caf\xe9 au lait"}',  # line 5: not UTF-8
        json.dumps({"_id": "empty", "text": "   "}).encode(),  # line 6: empty text
        good[2],
        good[0],  # line 8: duplicate id
        good[3],
    ]
    corpus = _write_jsonl(home.parent / "bad.jsonl", lines)
    dead_path = home.parent / "dead.jsonl"
    report = ingest(corpus, load_settings(index="bad"), dead_letter_path=dead_path, progress=False)
    dead = [json.loads(x) for x in dead_path.read_text().splitlines()]
    assert [d["line"] for d in dead] == [2, 3, 5, 6, 8]
    reasons = " | ".join(d["reason"] for d in dead)
    for word in ("JSON", "text", "UTF-8", "duplicate"):
        assert word in reasons
    assert report.rejected == 5 and report.records_read == 4
    backend = EmbeddedBackend(home / "db")
    doc_ids = {backend.get("bad", i)["doc_id"] for i in _all_ids(backend, "bad")}
    assert doc_ids == {json.loads(g)["_id"] for g in good}


def test_huge_document_lands_whole(home: Path) -> None:
    """A 10 MB document is chunked and written, not rejected (no embedding here, to stay fast)."""
    text = ("Serum ferritin rises in chronic inflammation while transferrin falls. " * 150_000)[: 10 * 1024 * 1024]
    corpus = _write_jsonl(home.parent / "huge.jsonl", [json.dumps({"_id": "big", "text": text}).encode(),
                                                     json.dumps({"_id": "small", "text": "tiny"}).encode()])
    settings = load_settings(index="huge")
    report = ingest(corpus, settings, processors=[], progress=False)
    assert report.rejected == 0 and report.records_read == 2
    backend = EmbeddedBackend(home / "db")
    assert backend.count("huge") == report.chunks > 5_000
    last = backend.get("huge", f"big#{report.chunks - 2}")
    assert last["chunk"]["end"] >= len(text) - 200


class _CrashAfter(EmbeddingProcessor):
    """The real embedding processor, made to die on its n-th batch (a crash mid-ingest)."""

    def __init__(self, embedder, n: int):
        super().__init__(embedder, batch_size=16)
        self.calls, self.n = 0, n

    def __call__(self, chunks, cache=None):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("simulated crash")
        return super().__call__(chunks, cache)


def test_crash_then_resume_has_no_duplicates_and_no_losses(home: Path, scifact_sample: Path, embedder) -> None:
    corpus = _write_jsonl(home.parent / "c.jsonl", _sample_lines(scifact_sample, 40))
    settings = load_settings(index="crash", ingest={"embed_batch_size": 8})  # batches of ~32 chunks
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(corpus, settings, processors=[_CrashAfter(embedder, 2)], progress=False)
    backend = EmbeddedBackend(home / "db")
    partial = len(_all_ids(backend, "crash"))
    assert 0 < partial
    report = ingest(corpus, settings, progress=False)
    assert report.records_skipped_by_checkpoint > 0 and report.rejected == 0
    ids = _all_ids(backend, "crash")
    assert len(ids) == len(set(ids))
    assert {i.split("#")[0] for i in ids} == {json.loads(x)["_id"] for x in _sample_lines(scifact_sample, 40)}
    # the fresh reference: same corpus in one go gives the same chunk ids
    fresh = ingest(corpus, settings.model_copy(update={"index": "fresh"}), progress=False)
    assert sorted(_all_ids(backend, "fresh")) == sorted(ids) and fresh.embeddings_cached == fresh.chunks


def test_index_with_another_dimension_is_refused(home: Path, scifact_sample: Path) -> None:
    backend = EmbeddedBackend(home / "db")
    backend.create_index("other", {"mappings": {"_meta": {"latentsearch": {"dimension": 768}}, "properties": {}}})
    corpus = _write_jsonl(home.parent / "c.jsonl", _sample_lines(scifact_sample, 2))
    with pytest.raises(IndexMismatchError, match="768-d"):
        ingest(corpus, load_settings(index="other"), progress=False)


# ------------------------------------------------------------------ bulk writer retries


class _Flaky(EmbeddedBackend):
    """The real engine behind a faulty link: whole-request 503s, then per-item 429s."""

    def __init__(self, path: Path, fail_requests: int, throttle_items: int):
        super().__init__(path)
        self.fail_requests, self.throttle_items, self.calls = fail_requests, throttle_items, 0

    def bulk(self, index, actions, *, refresh=False):
        self.calls += 1
        if self.fail_requests > 0:
            self.fail_requests -= 1
            raise TransientBackendError("503 service unavailable", status=503)
        throttled, rest = list(actions[: self.throttle_items]), list(actions[self.throttle_items :])
        self.throttle_items = 0
        results = super().bulk(index, rest, refresh=refresh)
        return [BulkItemResult(a.id, 429, "es_rejected_execution_exception") for a in throttled] + results


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(doc_id=f"d{i}", no=0, count=1, text=f"t{i}", start=0, end=2, line=i + 1) for i in range(n)]


def test_writer_retries_transient_failures_with_backoff(tmp_path: Path) -> None:
    backend = _Flaky(tmp_path / "db", fail_requests=2, throttle_items=3)
    backend.create_index("w", {"mappings": {"properties": {"text": {"type": "text"}}}})
    sleeps: list[float] = []
    dead = DeadLetter(tmp_path / "dead.jsonl")
    writer = BulkWriter(backend, "w", dead, batch_size=10, sleep=sleeps.append, backoff_initial_s=0.5)
    stats = writer.write(_chunks(10))
    assert stats.written == 10 and stats.failed == 0 and stats.retries == 3
    assert sleeps[1] > sleeps[0] * 0.9 and all(s <= 30 for s in sleeps)  # exponential, capped
    assert backend.count("w") == 10 and dead.count == 0


def test_writer_gives_up_into_the_dead_letter(tmp_path: Path) -> None:
    backend = _Flaky(tmp_path / "db", fail_requests=100, throttle_items=0)
    backend.create_index("w", {"mappings": {"properties": {"text": {"type": "text"}}}})
    dead = DeadLetter(tmp_path / "dead.jsonl")
    writer = BulkWriter(backend, "w", dead, batch_size=5, max_retries=2, sleep=lambda s: None)
    stats = writer.write(_chunks(5))
    dead.close()
    assert stats.failed == 5 and stats.written == 0
    rows = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert all("gave up after 2 retries" in r["reason"] and r["stage"] == "write" for r in rows)


def test_bulk_action_ids_are_doc_and_chunk() -> None:
    c = Chunk(doc_id="PMC1", no=3, count=4, text="x", start=0, end=1)
    assert BulkAction(c.id, c.to_source()).id == "PMC1#3"


def test_reingesting_a_shorter_document_deletes_its_stale_chunks(home: Path, embedder) -> None:
    long_text = " ".join(f"Sentence {i} about ferritin and iron stores in anaemia." for i in range(120))
    path = home.parent / "doc.jsonl"
    path.write_text(json.dumps({"_id": "d1", "text": long_text}) + "\n")
    settings = load_settings(index="stale")
    first = ingest(path, settings, progress=False)
    assert first.chunks > 3
    path.write_text(json.dumps({"_id": "d1", "text": "Now a short abstract."}) + "\n")
    second = ingest(path, settings, progress=False)  # the file changed: the checkpoint starts over
    assert second.chunks == 1 and second.stale_chunks_deleted == first.chunks - 1
    backend = EmbeddedBackend(home / "db")
    assert _all_ids(backend, "stale") == ["d1#0"]
    assert backend.get("stale", "d1#0")["text"] == "Now a short abstract."


def test_long_titles_shrink_the_chunk_so_everything_is_embedded(embedder) -> None:
    chunker = TokenChunker(embedder.tokenizer, 224, 10, model_max_tokens=embedder.max_tokens)
    title = "A very long title " * 12
    record = SourceRecord(id="t", title=title, text="word " * 600)
    for c in chunker.chunk(record):
        n = len(embedder.tokenizer(f"{title}\n{c.text}")["input_ids"])
        assert n <= embedder.max_tokens


def test_deleting_the_index_resets_its_checkpoint(home: Path, scifact_sample: Path) -> None:
    corpus = _write_jsonl(home.parent / "c.jsonl", _sample_lines(scifact_sample, 3))
    settings = load_settings(index="again")
    ingest(corpus, settings, progress=False)
    EmbeddedBackend(home / "db").delete_index("again")
    report = ingest(corpus, settings, progress=False)  # the re-created index gets everything again
    assert report.records_read == 3 and report.chunks_written == report.chunks > 0


# ------------------------------------------------------------------ gaps: mapping rejections, --no-resume


def test_a_document_the_mapping_rejects_goes_to_the_dead_letter_and_the_rest_lands(tmp_path: Path) -> None:
    """Not a transport failure: the engine answers 400 for one item (its `metadata.year` is not an
    integer), the writer must not retry it, and the dead letter names its line."""
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("m", {"mappings": {"properties": {
        "text": {"type": "text"},
        "metadata": {"properties": {"year": {"type": "integer"}, "ids": {"type": "keyword"}},
                     "dynamic": "strict"}}}})
    chunks = _chunks(4)
    chunks[1].metadata = {"year": "nineteen ninety"}  # the mapping says integer
    chunks[2].metadata = {"journal": "Nature"}  # metadata is strict: no such field
    chunks[3].metadata = {"year": 1999}
    dead = DeadLetter(tmp_path / "dead.jsonl")
    calls: list[int] = []
    writer = BulkWriter(backend, "m", dead, batch_size=10, sleep=calls.append)
    stats = writer.write(chunks)
    dead.close()
    assert (stats.written, stats.failed, stats.retries) == (2, 2, 0) and calls == []  # no retry of a 400
    rows = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(r["line"], r["id"], r["stage"]) for r in rows] == [(2, "d1#0", "write"), (3, "d2#0", "write")]
    assert "year" in rows[0]["reason"] and "journal" in rows[1]["reason"]
    assert sorted(_all_ids(backend, "m")) == ["d0#0", "d3#0"]
    assert backend.get("m", "d3#0")["metadata"] == {"year": 1999}


def test_resume_reports_where_it_resumed_and_no_resume_starts_over(home: Path, scifact_sample: Path) -> None:
    lines = _sample_lines(scifact_sample, 6)
    corpus = _write_jsonl(home.parent / "r.jsonl", lines)
    settings = load_settings(index="resume")
    first = ingest(corpus, settings, progress=False)
    assert first.resumed_from_item == 0 and first.records_read == 6
    resumed = ingest(corpus, settings, progress=False)
    assert resumed.resumed_from_item == 6  # the checkpoint: every record of the first run
    assert resumed.records_skipped_by_checkpoint == 6 and resumed.chunks == 0
    backend = EmbeddedBackend(home / "db")
    ids = _all_ids(backend, "resume")
    over = ingest(corpus, settings, resume=False, progress=False)  # what `--no-resume` passes
    assert over.resumed_from_item == 0 and over.records_skipped_by_checkpoint == 0 and over.records_read == 6
    assert over.chunks_written == len(ids)  # everything rewritten ...
    assert sorted(_all_ids(backend, "resume")) == sorted(ids)  # ... by id: no duplicates


def test_cli_no_resume_flag_reaches_the_pipeline(home: Path, scifact_sample: Path) -> None:
    from typer.testing import CliRunner

    from latentsearch.cli import app

    corpus = _write_jsonl(home.parent / "n.jsonl", _sample_lines(scifact_sample, 3))
    runner = CliRunner()
    reports = []
    for flag in ([], [], ["--no-resume"]):
        result = runner.invoke(app, ["ingest", str(corpus), "--index", "nr", "--json", "--no-latent", *flag])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    assert [r["records_skipped_by_checkpoint"] for r in reports] == [0, 3, 0]
    assert [r["resumed_from_item"] for r in reports] == [0, 3, 0]


# ------------------------------------------------------------------ progress per chunk

def test_latent_processor_reports_each_extraction_sub_batch_and_keeps_its_outputs(scifact_sample: Path,
                                                                                   tmp_path: Path) -> None:
    """The ingest bar used to move per ~256-chunk batch, so it sat at 0 for minutes during extraction: the latent
    processor now reports every extractor call's chunks, and slicing the batch changes none of the values."""
    from latentsearch.config import EntitySchema
    from latentsearch.ingest.processors import LatentEntityProcessor
    from latentsearch.models.factory import get_extractor

    extractor = get_extractor()  # the shipped adapter, 16 rows per model call
    step = extractor.batch_size
    titles = [json.loads(line)["title"] for line in _sample_lines(scifact_sample, step + 1)]
    schema = EntitySchema(text_type="biomedical article title", latent_types=["disease"])
    proc = LatentEntityProcessor(extractor, schema)
    assert proc._sub_batch() == step  # the extractor's own grouping: the values are what one call over all gives
    reported: list[int] = []
    proc.progress = reported.append
    chunks = [Chunk(doc_id=f"d{i}", no=0, count=1, text=t, start=0, end=len(t)) for i, t in enumerate(titles)]
    cache = ContentCache(tmp_path / "cache.sqlite")
    proc(chunks, cache)
    assert reported == [step, 1]  # per model call, not once per batch
    assert all(isinstance(c.latent, dict) for c in chunks) and any(c.latent for c in chunks)
    reported.clear()
    proc(chunks, cache)  # all cached now: enriched at once, reported once
    assert reported == [len(titles)]
    cache.close()


def test_ingest_bar_moves_within_a_batch_as_chunks_are_enriched() -> None:
    """The bar (a real rich Progress on stderr) counts records; within a batch it moves by the share of its chunks
    the slow processor has enriched, and shows chunks/s."""
    from latentsearch.config import EntitySchema
    from latentsearch.ingest.processors import LatentEntityProcessor
    from latentsearch.ingest.progress import IngestBar

    latent = LatentEntityProcessor(extractor=None, schema=EntitySchema(latent_types=["disease"]))
    embed = EmbeddingProcessor(embedder=None)
    with IngestBar(True, "idx", 20, [embed, latent], lambda: 0) as bar:
        assert latent.progress is not None and embed.progress is None  # the slow one drives the bar
        task = bar._live.tasks[0]
        bar.start_batch(0, 10, 100)  # records 1..10 hold 100 chunks
        latent.progress(25)
        assert bar.completed == task.completed == 2.5
        latent.progress(50)
        assert task.completed == 7.5 and "75 enriched" in task.description and "chunks/s" in task.description
        bar.end_batch(100)
        assert task.completed == 10 and "100 chunks written" in task.description
        bar.start_batch(10, 20, 40)
        latent.progress(10)
        assert task.completed == 12.5
    assert latent.progress is None  # detached: the processor may be reused elsewhere


def test_ingest_draws_its_bar_on_stderr_only(home: Path, scifact_sample: Path, capsys) -> None:
    corpus = _write_jsonl(home.parent / "c.jsonl", _sample_lines(scifact_sample, 3))
    settings = load_settings(index="bar")
    report = ingest(corpus, settings, progress=True)
    out = capsys.readouterr()
    assert report.records_read == 3 and out.out == ""
    assert "chunks/s" in out.err and f"{report.chunks} chunks written" in out.err
