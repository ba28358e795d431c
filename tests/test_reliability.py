"""Issue 14: concurrent writers, poison records, a poisoned index, lost CSV rows, a lost meta file,
path-like index names, freshness by content, CLI argument errors. Real embedded engine, real
processes, real files; each test names the defect it pins down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from latentsearch.backends.base import BackendError, BulkAction
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.backends.embedded.layout import column_name, field_path

REPO = Path(__file__).resolve().parents[1]

_WRITER = textwrap.dedent("""
    import sys
    from latentsearch.backends.base import BulkAction
    from latentsearch.backends.embedded import EmbeddedBackend
    db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    backend = EmbeddedBackend(db)
    backend.create_index("shared", {"mappings": {"properties": {"writer": {"type": "keyword"}}}}, exist_ok=True)
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # both start writing at the same moment
    for start in range(0, n, 50):
        backend.bulk("shared", [BulkAction(id=f"id-{i}", source={"writer": tag, "n": i}) for i in range(start, start + 50)])
""")


def _ids(backend: EmbeddedBackend, index: str) -> list[str]:
    return backend.db.open_table(index).to_arrow().column("_id").to_pylist()


def _start_writer(db: Path, tag: str, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(db), tag, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


# ------------------------------------------------------------------ concurrent writers


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_writing_the_same_ids_leave_one_row_per_id(tmp_path: Path, round_: int) -> None:
    """Before: both merge_insert commits won and 48-256 ids had two rows. Now: a per-index file lock."""
    db = tmp_path / "db"
    EmbeddedBackend(db).create_index("shared", {"mappings": {"properties": {"writer": {"type": "keyword"}}}})
    procs = [_start_writer(db, tag, 200) for tag in ("a", "b")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=300) == 0
    ids = _ids(EmbeddedBackend(db), "shared")
    assert len(ids) == 200 and len(set(ids)) == 200
    backend = EmbeddedBackend(db)
    assert backend.count("shared") == 200
    assert {backend.get("shared", f"id-{i}")["n"] for i in range(200)} == set(range(200))


def test_a_held_lock_times_out_with_a_clear_message(tmp_path: Path) -> None:
    from filelock import FileLock

    backend = EmbeddedBackend(tmp_path / "db", lock_timeout_s=0.3)
    backend.create_index("locked", {})
    with FileLock(str(tmp_path / "db" / "_latentsearch_indices" / "locked.lock")):
        with pytest.raises(BackendError, match=r"stayed locked for 0.3 s.*locked\.lock") as err:
            backend.bulk("locked", [BulkAction(id="1", source={"a": 1})])
    assert err.value.status == 503  # transient: the bulk writer retries it
    assert backend.bulk("locked", [BulkAction(id="1", source={"a": 1})])[0].ok


# ------------------------------------------------------------------ column names


def test_column_names_are_injective_and_reversible() -> None:
    paths = ["pub-date", "pub_date", "pub.date", "pub__date", "pub_udate", "a.b_c", "über", "x y", "_x2d_"]
    columns = [column_name(p) for p in paths]
    assert len(set(columns)) == len(paths)
    assert [field_path(c) for c in columns] == paths


def test_colliding_metadata_keys_no_longer_poison_the_index(tmp_path: Path) -> None:
    """Before: `pub-date` + `pub_date` in one document aborted with "Duplicate field name"; across
    documents the merged mapping was persisted and every later ingest failed."""
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("meta", {})
    res = backend.bulk("meta", [BulkAction(id="1", source={"pub-date": "2020", "pub_date": "2021"}),
                                BulkAction(id="2", source={"pub-date": "2019"}),
                                BulkAction(id="3", source={"pub_date": "2018"})])
    assert all(r.ok for r in res)
    assert backend.bulk("meta", [BulkAction(id="4", source={"clean": "yes"})])[0].ok
    hits = backend.search("meta", {"query": {"term": {"pub_date.keyword": "2021"}}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["1"]
    hits = backend.search("meta", {"query": {"term": {"pub-date.keyword": "2019"}}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["2"]


def test_a_legacy_index_refuses_the_colliding_document_alone(tmp_path: Path) -> None:
    """Indexes written before the injective encoding keep their column names; a field that would
    share a column is refused per document, before the mapping is persisted."""
    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    backend.create_index("old", {"mappings": {"properties": {"title": {"type": "keyword"}}}})
    meta = db / "_latentsearch_indices" / "old.json"
    body = json.loads(meta.read_text())
    body.pop("column_encoding")  # what an older version wrote ("title" has the same column either way)
    meta.write_text(json.dumps(body))
    backend = EmbeddedBackend(db)
    res = backend.bulk("old", [BulkAction(id="1", source={"title": "t", "pub-date": "2020"}),
                               BulkAction(id="2", source={"title": "u", "pub_date": "2021"}),
                               BulkAction(id="3", source={"title": "v"})])
    assert [r.ok for r in res] == [True, False, True]
    assert "would share the column" in res[1].error
    assert "pub_date" not in json.loads(meta.read_text())["mappings"]["properties"]
    assert EmbeddedBackend(db).bulk("old", [BulkAction(id="4", source={"title": "w"})])[0].ok  # not poisoned
    assert EmbeddedBackend(db).count("old") == 3


# ------------------------------------------------------------------ poison records


def _deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


def test_poison_documents_fail_alone_and_the_rest_of_the_bulk_lands(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("poison", {})
    actions = [
        BulkAction(id="ok-1", source={"text": "fine"}),
        BulkAction(id="text", source={"text": "bad \ud800 text"}),
        BulkAction(id="meta", source={"text": "fine", "metadata": {"k": "\udfff"}}),
        BulkAction(id="key", source={"text": "fine", "metadata": {"\ud800": 1}}),
        BulkAction(id="id-\ud800", source={"text": "fine"}),
        BulkAction(id="deep", source={"text": "fine", "metadata": _deep(900)}),
        BulkAction(id="ok-2", source={"text": "also fine"}),
    ]
    res = backend.bulk("poison", actions)
    assert [r.ok for r in res] == [True, False, False, False, False, False, True]
    assert all(r.status == 400 and r.error for r in res[1:6])
    assert "deeper than the limit of 20" in res[5].error
    assert sorted(_ids(backend, "poison")) == ["ok-1", "ok-2"]


def test_poison_records_are_dead_lettered_with_their_line_and_the_batch_lands(home: Path) -> None:
    """Before: a JSON-escaped lone surrogate or 900-deep metadata aborted the ingest and lost the
    good records of its batch; the dead-letter writer itself crashed serialising `raw`."""
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest

    deep = json.dumps(_deep(900))
    lines = [
        '{"_id": "a", "text": "Aspirin lowers fever."}',
        '{"_id": "b", "text": "bad \\ud800 text"}',
        '{"_id": "c", "text": "fine", "metadata": {"k": "\\udfff"}}',
        '{"_id": "d\\ud800", "text": "fine"}',
        '{"_id": "e", "text": "fine", "nested": ' + deep + "}",
        '{"_id": "f", "text": "Ibuprofen reduces pain."}',
        '{"_id": "g", "text": "fine", "\\ud800key": 1}',
    ]
    corpus = home.parent / "poison.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dead_path = home.parent / "dead.jsonl"
    report = ingest(corpus, load_settings(index="poison"), processors=[], progress=False, dead_letter_path=dead_path)
    dead = [json.loads(line) for line in dead_path.read_text(encoding="utf-8").splitlines()]
    assert [d["line"] for d in dead] == [2, 3, 4, 5, 7]
    assert all("surrogate" in d["reason"] or "deeper than the limit" in d["reason"] for d in dead)
    assert dead[0]["raw"] == "bad \ud800 text"  # escaped on disk, the same string when read back
    assert report.rejected == 5 and report.chunks_written == 2
    assert sorted(_ids(EmbeddedBackend(home / "db"), "poison")) == ["a#0", "f#0"]


def test_the_dead_letter_writer_never_fails_on_content(tmp_path: Path) -> None:
    from latentsearch.ingest.bulk import DeadLetter
    from latentsearch.ingest.records import Rejected

    dead = DeadLetter(tmp_path / "d.jsonl")
    dead.write(Rejected(reason="r \ud800", raw="x\udcff", id="\ud800", line=3))
    dead.write(Rejected(reason="plain é", line=4))
    dead.close()
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["raw"] == "x\udcff" and rows[0]["id"] == "\ud800" and rows[1]["reason"] == "plain é"


def test_record_limits_are_configurable(tmp_path: Path) -> None:
    from latentsearch.ingest.records import SourceRecord, record_problem

    rec = SourceRecord(id="1", text="t" * 50, metadata={"a": {"b": {"c": 1}}, "list": list(range(10))})
    assert record_problem(rec, max_depth=20, max_fields=100, max_field_chars=1000) is None
    assert "deeper" in record_problem(rec, max_depth=3, max_fields=100, max_field_chars=1000)
    assert "more than the limit of 5" in record_problem(rec, max_depth=20, max_fields=5, max_field_chars=1000)
    assert "over the limit of 10" in record_problem(rec, max_depth=20, max_fields=100, max_field_chars=10)
    backend = EmbeddedBackend(tmp_path / "db", max_depth=2)
    backend.create_index("lim", {})
    res = backend.bulk("lim", [BulkAction(id="1", source={"a": {"b": {"c": 1}}}), BulkAction(id="2", source={"a": 1})])
    assert [r.ok for r in res] == [False, True]


# ------------------------------------------------------------------ CSV


def test_an_unterminated_csv_quote_is_dead_lettered_not_swallowed(tmp_path: Path) -> None:
    """Before: the quote swallowed every following row into one field and the run exited 0."""
    from latentsearch.ingest.readers import read_records
    from latentsearch.ingest.records import Rejected

    path = tmp_path / "q.csv"
    path.write_text('id,text\n1,fine\n2,"broken\n3,lost?\n4,lost too\n', encoding="utf-8")
    items = list(read_records(path))
    assert [i.id for i in items if not isinstance(i, Rejected)] == ["1"]
    (rej,) = [i for i in items if isinstance(i, Rejected)]
    assert rej.line == 3 and "unterminated quoted field" in rej.reason and "lines 3-5" in rej.reason


def test_a_repeated_csv_header_is_refused(tmp_path: Path) -> None:
    """Before: the second `text` column silently replaced the first."""
    from latentsearch.ingest.readers import read_records

    path = tmp_path / "h.csv"
    path.write_text("id,text,text\n1,first,second\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"repeats the column name\(s\) \['text'\]"):
        list(read_records(path))


# ------------------------------------------------------------------ index metadata


def test_a_lost_meta_file_is_rebuilt_from_the_table_and_never_overwrites_it(tmp_path: Path) -> None:
    """Before: the next ingest called create_table(mode="overwrite"): 300 rows became 20."""
    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    backend.create_index("keep", {"mappings": {"properties": {"n": {"type": "long"}}}})
    backend.bulk("keep", [BulkAction(id=str(i), source={"n": i, "tag": "dyn"}) for i in range(300)])
    (db / "_latentsearch_indices" / "keep.json").unlink()
    fresh = EmbeddedBackend(db)
    assert fresh.list_indices() == [] and fresh.index_exists("keep")
    assert fresh.create_index("keep", {}, exist_ok=True) is False
    assert fresh.count("keep") == 300
    assert "tag" in fresh.get_mapping("keep")["properties"]  # dynamic additions were mirrored too
    assert fresh.search("keep", {"query": {"term": {"tag.keyword": "dyn"}}})["hits"]["total"]["value"] == 300


def test_a_table_without_meta_or_mirror_refuses_with_a_repair_hint(tmp_path: Path) -> None:
    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    backend.db.create_table("orphan", schema=pa.schema([pa.field("_id", pa.string()), pa.field("_source", pa.string())]))
    backend.db.open_table("orphan").add(pa.table({"_id": ["1"], "_source": ["{}"]}))
    with pytest.raises(BackendError, match="meta file .* is missing.*latentsearch doctor"):
        backend.create_index("orphan", {})
    assert backend.db.open_table("orphan").count_rows() == 1


@pytest.mark.parametrize("name", ["../../x", "../outside", "a/b", "", "x" * 300, "UPPER"])
def test_every_method_checks_the_index_name(tmp_path: Path, name: str) -> None:
    """Before: delete_index('../../x') deleted a file outside the database."""
    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    victim = tmp_path / "x.json"
    victim.write_text("{}")
    (db / "outside.json").write_text("{}")
    for call in (lambda: backend.delete_index(name), lambda: backend.index_exists(name),
                 lambda: backend.get_mapping(name), lambda: backend.count(name),
                 lambda: backend.bulk(name, [BulkAction(id="1", source={})])):
        with pytest.raises(BackendError, match="invalid index name"):
            call()
    assert victim.is_file() and (db / "outside.json").is_file()


# ------------------------------------------------------------------ freshness by content


def test_an_edit_that_keeps_size_and_mtime_is_not_skipped(tmp_path: Path) -> None:
    from latentsearch.ingest.bulk import Checkpoint

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "1", "text": "aaaa"}\n')
    st = path.stat()
    before = Checkpoint.source_fingerprint(path)
    path.write_text('{"id": "1", "text": "bbbb"}\n')
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert Checkpoint.source_fingerprint(path) != before


# ------------------------------------------------------------------ CLI


def test_cli_empty_index_and_markup_in_errors(home: Path) -> None:
    from typer.testing import CliRunner

    from latentsearch.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["info", "--index", ""])
    assert res.exit_code != 0 and "must not be empty" in res.output
    res = runner.invoke(app, ["info", "--index", "^*$"])
    assert res.exit_code != 0
    assert "[a-z0-9]" in res.output  # the pattern in the message is printed, not eaten as markup


def test_cli_invalid_utf8_argv_is_a_clear_error(home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "latentsearch.cli", "info", "--index", b"bad\xff"],
                         capture_output=True, env=env, timeout=120)
    assert out.returncode == 2
    assert b"not valid UTF-8" in out.stderr and b"Traceback" not in out.stderr


# ------------------------------------------------------------------ doctor


def _index_with_duplicates(db: Path) -> EmbeddedBackend:
    """What two unlocked writers (older versions) left: the same ids appended twice."""
    backend = EmbeddedBackend(db)
    backend.create_index("dup", {"mappings": {"properties": {
        "v": {"type": "knn_vector", "dimension": 2, "method": {"space_type": "cosinesimil"}}}}})
    backend.bulk("dup", [BulkAction(id=str(i), source={"n": i, "v": [1.0, float(i)]}) for i in range(20)])
    table = backend.db.open_table("dup")
    again = table.to_arrow().slice(0, 5)
    src = [json.dumps({**json.loads(s), "n": 100 + k}) for k, s in enumerate(again.column("_source").to_pylist())]
    table.add(again.set_column(again.schema.get_field_index("_source"), "_source", pa.array(src)))
    return backend


def test_doctor_finds_and_repairs_duplicate_ids(tmp_path: Path) -> None:
    from latentsearch.backends.embedded.doctor import diagnose

    backend = _index_with_duplicates(tmp_path / "db")
    found = diagnose(backend, "dup")
    assert found.rows == 25 and found.duplicate_ids == 5 and not found.healthy
    fixed = diagnose(backend, "dup", repair=True)
    assert fixed.duplicate_rows_removed == 5 and fixed.rows == 20 and fixed.healthy
    ids = _ids(backend, "dup")
    assert len(ids) == len(set(ids)) == 20
    assert backend.get("dup", "0")["n"] == 100  # the last written row won
    assert diagnose(backend, "dup").problems == []


def test_doctor_reports_bad_vectors_a_rolled_back_manifest_and_missing_rows(tmp_path: Path, caplog) -> None:
    from latentsearch.backends.embedded.doctor import diagnose

    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    backend.create_index("v", {"mappings": {"properties": {
        "v": {"type": "knn_vector", "dimension": 2, "method": {"space_type": "cosinesimil"}}}}})
    backend.bulk("v", [BulkAction(id="a", source={"v": [1.0, 0.0]})])
    table = backend.db.open_table("v")
    row = table.to_arrow()
    zero = pa.FixedSizeListArray.from_arrays(pa.array([0.0, 0.0], pa.float32()), 2)
    table.add(row.set_column(row.schema.get_field_index("_id"), "_id", pa.array(["b"]))
              .set_column(row.schema.get_field_index("f__v"), "f__v", zero))
    backend.bulk("v", [BulkAction(id="c", source={"v": [0.0, 1.0]})])
    report = diagnose(backend, "v", expected_rows=5)
    assert report.bad_vectors == {"v": 1} and not report.rolled_back
    assert any("recorded 5 chunks written, the index holds 3" in p for p in report.problems)
    versions = sorted((db / "v.lance" / "_versions").glob("*.manifest"), key=lambda p: p.stat().st_mtime_ns)
    versions[-1].unlink()  # the latest manifest is lost: Lance would serve the previous version silently
    with caplog.at_level("WARNING", logger="latentsearch.embedded"):
        assert EmbeddedBackend(db).count("v") == 2  # served, but not silently:
    assert "the latest manifest is missing" in caplog.text
    report = diagnose(EmbeddedBackend(db), "v")
    assert report.rolled_back and report.latest_committed_version == report.version + 1
    assert any("latest manifest" in p for p in report.problems)


def test_doctor_rebuilds_a_meta_file_from_the_columns(tmp_path: Path) -> None:
    from latentsearch.backends.embedded.doctor import diagnose

    db = tmp_path / "db"
    backend = EmbeddedBackend(db)
    backend.create_index("cols", {"mappings": {"properties": {"pub-date": {"type": "keyword"}, "n": {"type": "long"}}}})
    backend.bulk("cols", [BulkAction(id="1", source={"pub-date": "2020", "n": 3})])
    table = backend.db.open_table("cols")
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        table.replace_field_metadata("_source", {})  # an older version kept no copy
    (db / "_latentsearch_indices" / "cols.json").unlink()
    fresh = EmbeddedBackend(db)
    assert diagnose(fresh, "cols").meta == "missing"
    report = diagnose(fresh, "cols", repair=True)
    assert report.meta == "rebuilt" and report.rows == 1
    assert EmbeddedBackend(db).search("cols", {"query": {"term": {"pub-date": "2020"}}})["hits"]["total"]["value"] == 1


def test_cli_doctor(home: Path) -> None:
    from typer.testing import CliRunner

    from latentsearch.cli import app

    _index_with_duplicates(home / "db")
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", "--index", "dup", "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["duplicate_ids"] == 5
    res = runner.invoke(app, ["doctor", "--index", "dup", "--repair", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["duplicate_rows_removed"] == 5


def test_the_write_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "db", lock_timeout_s=2)
    backend.create_index("re", {})
    with backend.write_lock("re"):
        assert backend.bulk("re", [BulkAction(id="1", source={"a": 1})], refresh=True)[0].ok
    assert backend.bulk("re", [BulkAction(id="2", source={"a": 2})], refresh=True)[0].ok
    assert backend.count("re") == 2
