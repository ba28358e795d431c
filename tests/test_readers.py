"""Tests for latentsearch.ingest.readers: every format, field mapping, and every bad-input case.

The point of most tests: a bad unit becomes exactly one `Rejected` with a useful reason, and the good
records around it still arrive.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentsearch.ingest.readers import (
    SUPPORTED_FORMATS,
    FieldMap,
    count_records,
    detect_format,
    markdown_title,
    read_records,
)
from latentsearch.ingest.records import Rejected, SourceRecord

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- helpers


def split(items: Any) -> tuple[list[SourceRecord], list[Rejected]]:
    recs: list[SourceRecord] = []
    rejs: list[Rejected] = []
    for it in items:
        (recs if isinstance(it, SourceRecord) else rejs).append(it)
    return recs, rejs


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


GOOD = [
    {"_id": "a", "title": "Alpha", "text": "first doc", "year": 2020},
    {"_id": "b", "title": "Beta", "text": "second doc", "tags": ["x", "y"]},
    {"_id": "c", "text": "third doc", "meta": {"lang": "en"}},
]


# ------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.JSONL.gz", "jsonl"),
        ("a.csv", "csv"),
        ("a.csv.gz", "csv"),
        ("a.tsv", "tsv"),
        ("a.tsv.gz", "tsv"),
        ("a.parquet", "parquet"),
    ],
)
def test_detect_format_by_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    assert detect_format(tmp_path / name) == fmt


def test_detect_format_unknown_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as ei:
        detect_format(tmp_path / "data.xml")
    msg = str(ei.value)
    for fmt in SUPPORTED_FORMATS:
        assert fmt in msg
    with pytest.raises(ValueError, match="gzipped Parquet"):
        detect_format(tmp_path / "x.parquet.gz")


def test_detect_format_folders(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", GOOD)
    assert detect_format(beir) == "beir"
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "x.md").write_text("# X\n")
    assert detect_format(docs) == "textdir"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.json").write_text("{}")
    with pytest.raises(ValueError, match="neither corpus.jsonl"):
        detect_format(empty)


def test_bad_arguments_raise_eagerly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nope.jsonl")
    p = write_jsonl(tmp_path / "a.jsonl", GOOD)
    with pytest.raises(ValueError, match="unknown format"):
        read_records(p, format="xml")
    with pytest.raises(ValueError, match="needs a folder"):
        read_records(p, format="textdir")
    with pytest.raises(ValueError, match="limit"):
        read_records(p, limit=-1)
    with pytest.raises(ValueError):
        FieldMap(text_field=[])
    with pytest.raises(ValueError):
        FieldMap(txt_field="body")  # type: ignore[call-arg]  # typos are caught, not ignored


# ----------------------------------------------------------------------------------------------- JSONL


def test_jsonl_basic_and_default_metadata(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", GOOD)
    recs, rejs = split(read_records(p))
    assert rejs == []
    assert [r.id for r in recs] == ["a", "b", "c"]
    assert [r.line for r in recs] == [1, 2, 3]
    assert recs[0].title == "Alpha" and recs[2].title is None
    assert recs[0].metadata == {"year": 2020}
    assert recs[1].metadata == {"tags": ["x", "y"]}
    assert recs[2].metadata == {"meta": {"lang": "en"}}
    assert all(r.source_path == str(p) for r in recs)


def test_jsonl_gz_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    body = "\r\n".join(json.dumps(r) for r in GOOD[:2]) + "\r\n\r\n   \r\n" + json.dumps(GOOD[2]) + "\r\n"
    p = tmp_path / "a.jsonl.gz"
    p.write_bytes(gzip.compress(b"\xef\xbb\xbf" + body.encode()))
    recs, rejs = split(read_records(p))
    assert rejs == []
    assert [(r.id, r.line) for r in recs] == [("a", 1), ("b", 2), ("c", 5)]
    assert count_records(p) == 5  # an estimate: blank lines count


def test_jsonl_gz_detected_by_magic_even_with_override(tmp_path: Path) -> None:
    p = tmp_path / "dump.bin"
    p.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in GOOD).encode()))
    recs, _ = split(read_records(p, format="ndjson"))
    assert [r.id for r in recs] == ["a", "b", "c"]


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    rows = [{"_id": str(i), "text": f"doc {i} " + "x" * 200} for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    recs, rejs = split(read_records(p))
    assert 0 < len(recs) < 2000
    assert len(rejs) == 1 and "corrupt or truncated" in rejs[0].reason


def test_malformed_json_line_reports_line_and_keeps_neighbours(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text(
        json.dumps(GOOD[0]) + "\n"
        + json.dumps(GOOD[1]) + "\n"
        + '{"_id": "bad", "text": "oops",\n'
        + json.dumps(GOOD[2]) + "\n"
    )
    recs, rejs = split(read_records(p))
    assert [r.id for r in recs] == ["a", "b", "c"]
    assert len(rejs) == 1
    rej = rejs[0]
    assert rej.line == 3 and "line 3" in rej.reason and "malformed JSON" in rej.reason
    assert rej.stage == "read" and rej.source_path == str(p)
    assert rej.raw is not None and rej.raw.startswith('{"_id": "bad"')


@pytest.mark.parametrize(
    ("line", "kind"), [("[1, 2]", "array"), ('"just a string"', "string"), ("42", "number"), ("null", "null")]
)
def test_non_object_line_rejected(tmp_path: Path, line: str, kind: str) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(GOOD[0]) + "\n" + line + "\n" + json.dumps(GOOD[1]) + "\n")
    recs, rejs = split(read_records(p))
    assert [r.id for r in recs] == ["a", "b"]
    assert len(rejs) == 1 and rejs[0].line == 2
    assert "expected a JSON object" in rejs[0].reason and kind in rejs[0].reason


def test_non_utf8_bytes_mid_file(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    good = [json.dumps(r).encode() + b"\n" for r in GOOD]
    bad = b'{"_id": "latin", "text": "caf\xe9 au lait"}\n'
    p.write_bytes(good[0] + good[1] + bad + good[2])
    recs, rejs = split(read_records(p))
    assert [r.id for r in recs] == ["a", "b", "c"]
    assert len(rejs) == 1
    rej = rejs[0]
    pos = bad.index(b"\xe9")
    assert rej.line == 3
    assert "UTF-8" in rej.reason and "re-encode" in rej.reason
    assert "0xe9" in rej.reason and f"position {pos}" in rej.reason
    assert f"byte offset {len(good[0]) + len(good[1]) + pos}" in rej.reason
    assert rej.raw is not None and "caf\\xe9" in rej.raw


def test_missing_empty_and_non_string_text(tmp_path: Path) -> None:
    rows: list[Any] = [
        GOOD[0],
        {"_id": "m", "body": "text lives elsewhere"},
        {"_id": "e", "text": ""},
        {"_id": "w", "text": "  \n\t "},
        {"_id": "n", "text": None},
        {"_id": "i", "text": 12},
        GOOD[1],
    ]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    recs, rejs = split(read_records(p))
    assert [r.id for r in recs] == ["a", "b"]
    by_id = {r.id: r for r in rejs}
    assert set(by_id) == {"m", "e", "w", "n", "i"}
    assert "text field 'text' is missing" in by_id["m"].reason
    assert "'_id', 'body'" in by_id["m"].reason  # names the available fields
    assert by_id["m"].line == 2 and "line 2" in by_id["m"].reason
    for rid in ("e", "w", "n"):
        assert "text field 'text' is empty" in by_id[rid].reason
    assert "is a number, expected a string" in by_id["i"].reason


def test_duplicate_ids_first_wins(tmp_path: Path) -> None:
    rows = [
        {"_id": "x", "text": "one"},
        {"_id": "y", "text": "two"},
        {"_id": "x", "text": "three"},
        {"_id": 7, "text": "four"},
        {"_id": "7", "text": "five"},
    ]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    recs, rejs = split(read_records(p))
    assert [(r.id, r.text) for r in recs] == [("x", "one"), ("y", "two"), ("7", "four")]
    assert [(r.id, r.line) for r in rejs] == [("x", 3), ("7", 5)]
    assert "duplicate id 'x'" in rejs[0].reason and "first seen at line 1" in rejs[0].reason
    assert "first seen at line 4" in rejs[1].reason


def test_ten_megabyte_document_passes_whole(tmp_path: Path) -> None:
    big = ("0123456789abcdefghijklmnopqrstuvwxyzäöü€ \n" * 250_000)[: 10 * 1024 * 1024]
    p = tmp_path / "big.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        f.write(json.dumps(GOOD[0]) + "\n")
        f.write(json.dumps({"_id": "big", "text": big}, ensure_ascii=False) + "\n")
        f.write(json.dumps(GOOD[1]) + "\n")
    recs, rejs = split(read_records(p))
    assert rejs == []
    assert [r.id for r in recs] == ["a", "big", "b"]
    assert len(recs[1].text) == len(big) and recs[1].text == big


def test_ten_megabyte_csv_field_passes_whole(tmp_path: Path) -> None:
    big = "lorem, \"ipsum\"\n" * (10 * 1024 * 1024 // 15)
    p = write_csv(tmp_path / "big.csv", [["id", "text"], ["1", "small"], ["2", big], ["3", "after"]])
    recs, rejs = split(read_records(p))
    assert rejs == []
    assert [r.id for r in recs] == ["1", "2", "3"]
    assert recs[1].text == big


def test_limit_counts_records_not_rejects(tmp_path: Path) -> None:
    rows = [{"_id": "1", "text": "a"}, {"_id": "2"}, {"_id": "3", "text": "c"}, {"_id": "4", "text": "d"}]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    recs, rejs = split(read_records(p, limit=2))
    assert [r.id for r in recs] == ["1", "3"] and len(rejs) == 1
    assert list(read_records(p, limit=0)) == []


# --------------------------------------------------------------------------------------- field mapping


def test_id_fallback_numbers_and_derived_ids(tmp_path: Path) -> None:
    rows = [
        {"id": 12, "text": "uses the fallback id field"},
        {"_id": "u", "id": "ignored", "text": "_id wins"},
        {"text": "no id at all"},
        {"_id": "", "text": "empty id counts as absent"},
        {"_id": 3.0, "text": "integral float"},
    ]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    recs, rejs = split(read_records(p))
    assert rejs == []
    ids = [r.id for r in recs]
    assert ids[0] == "12" and ids[1] == "u" and ids[4] == "3"
    assert ids[2].startswith("auto-") and ids[3].startswith("auto-") and ids[2] != ids[3]
    # deterministic: same path + line -> same id
    again = [r.id for r in split(read_records(p))[0]]
    assert again == ids
    # every candidate id field is kept out of default metadata
    assert recs[1].metadata == {}


def test_bad_id_type_rejected(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", [{"_id": {"x": 1}, "text": "t"}, GOOD[0]])
    recs, rejs = split(read_records(p))
    assert [r.id for r in recs] == ["a"]
    assert "id field '_id' is a object" in rejs[0].reason


def test_custom_fields_dotted_and_joined_text(tmp_path: Path) -> None:
    rows = [
        {"doc": {"key": "d1", "head": "H1", "body": "Body one", "lang": "en"}, "abstract": "Abs one", "x": 1},
        {"doc": {"key": "d2", "body": "Body two"}, "abstract": "", "x": 2},
        {"doc": {"key": "d3"}, "abstract": "   "},
    ]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    fm = FieldMap(id_field="doc.key", text_field=["abstract", "doc.body"], title_field="doc.head")
    recs, rejs = split(read_records(p, fields=fm))
    assert [r.id for r in recs] == ["d1", "d2"]
    assert recs[0].text == "Abs one\n\nBody one" and recs[0].title == "H1"
    assert recs[1].text == "Body two" and recs[1].title is None
    # used leaves are pruned from default metadata, the rest of the object stays
    assert recs[0].metadata == {"doc": {"lang": "en"}, "x": 1}
    assert recs[1].metadata == {"x": 2}
    assert len(rejs) == 1 and rejs[0].id == "d3"
    assert "text fields ['abstract', 'doc.body'] is empty" in rejs[0].reason


def test_explicit_metadata_fields_and_dict_field_map(tmp_path: Path) -> None:
    rows = [{"pid": "p1", "body": "text", "year": 2001, "src": {"db": "pubmed", "n": 3}, "noise": "drop me"}]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    fields = {
        "id_field": "pid",
        "text_field": "body",
        "title_field": None,
        "metadata_fields": ["year", "src.db", "absent"],
    }
    (rec,), _ = split(read_records(p, fields=fields))
    assert rec.id == "p1" and rec.title is None
    assert rec.metadata == {"year": 2001, "src": {"db": "pubmed"}}


def test_nested_metadata_object_is_merged(tmp_path: Path) -> None:
    rows = [{"_id": "1", "text": "t", "metadata": {"a": 1, "b": 2}, "b": 3}]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    (rec,), _ = split(read_records(p))
    assert rec.metadata == {"a": 1, "b": 3}  # top-level field wins on a clash


# ------------------------------------------------------------------------------------------- CSV / TSV


def test_csv_lines_follow_file_lines(tmp_path: Path) -> None:
    rows = [
        ["id", "title", "text", "year"],
        ["1", "One", "first", "2020"],
        ["2", "Two", "multi\nline\ntext", ""],
        ["3", "", "third", "2022"],
    ]
    p = write_csv(tmp_path / "a.csv", rows)
    recs, rejs = split(read_records(p))
    assert rejs == []
    assert [(r.id, r.line) for r in recs] == [("1", 2), ("2", 3), ("3", 6)]
    assert recs[1].text == "multi\nline\ntext"
    assert recs[0].metadata == {"year": "2020"} and recs[1].metadata == {}  # empty cell = null
    assert recs[2].title is None
    assert count_records(p) == 5  # physical lines minus the header: an estimate (3 rows here)


def test_csv_bad_rows_keep_neighbours(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(
        b"id,text\n"
        b"1,good one\n"
        b"2,\n"  # empty text
        b"3,caf\xe9\n"  # latin-1 byte
        b"4,too,many,fields\n"
        b"\n"
        b"5,good two\n"
    )
    recs, rejs = split(read_records(p))
    assert [(r.id, r.line) for r in recs] == [("1", 2), ("5", 7)]
    assert [r.line for r in rejs] == [3, 4, 5]
    assert "text field 'text' is empty" in rejs[0].reason
    assert "UTF-8" in rejs[1].reason and "re-encode" in rejs[1].reason and "'text'" in rejs[1].reason
    assert "row has 4 fields but the header has 2" in rejs[2].reason


def test_tsv_gz_and_bom(tmp_path: Path) -> None:
    rows = [["_id", "text", "k"], ["a", 'say "hi"', "v"], ["b", "x\ty", "w"]]
    plain = write_csv(tmp_path / "tmp.tsv", rows, "\t")
    p = tmp_path / "a.tsv.gz"
    p.write_bytes(gzip.compress(b"\xef\xbb\xbf" + plain.read_bytes()))
    recs, rejs = split(read_records(p))
    assert rejs == []
    got = [(r.id, r.text, r.metadata) for r in recs]
    assert got == [("a", 'say "hi"', {"k": "v"}), ("b", "x\ty", {"k": "w"})]


# --------------------------------------------------------------------------------------------- Parquet


def test_parquet_streams_row_groups(tmp_path: Path) -> None:
    import datetime as dt

    n = 1300
    table = pa.table(
        {
            "_id": pa.array(range(n), pa.int64()),
            "title": [f"T{i}" for i in range(n)],
            "text": [("" if i == 700 else f"doc {i}") for i in range(n)],
            "when": [dt.date(2020, 1, 1)] * n,
            "tags": [["a", "b"]] * n,
        }
    )
    p = tmp_path / "a.parquet"
    pq.write_table(table, p, row_group_size=500)
    assert count_records(p) == n
    recs, rejs = split(read_records(p))
    assert len(recs) == n - 1 and len(rejs) == 1
    assert rejs[0].line == 701 and rejs[0].id == "700" and "empty" in rejs[0].reason
    assert recs[0].id == "0" and recs[0].line == 1 and recs[-1].line == n
    assert recs[0].metadata == {"when": "2020-01-01", "tags": ["a", "b"]}
    sub, _ = split(read_records(p, fields=FieldMap(metadata_fields=["tags"]), limit=3))
    assert [r.metadata for r in sub] == [{"tags": ["a", "b"]}] * 3


def test_unreadable_parquet_is_one_reject(tmp_path: Path) -> None:
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"not parquet at all")
    recs, rejs = split(read_records(p))
    assert recs == [] and len(rejs) == 1 and "Parquet" in rejs[0].reason


# --------------------------------------------------------------------------------------------- folders


def test_beir_folder(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    write_jsonl(d / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x", "metadata": {"url": "u"}}])
    (rec,), rejs = split(read_records(d))
    assert rejs == [] and rec.id == "d1" and rec.metadata == {"url": "u"}
    assert rec.source_path == str(d / "corpus.jsonl")
    assert count_records(d) == 1


def test_text_folder(tmp_path: Path) -> None:
    d = tmp_path / "notes"
    (d / "b" / "deep").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / ".git" / "x.md").write_text("# hidden\n")
    (d / "z.txt").write_text("plain text\n")
    md = "---\ntitle: fm\n---\n```\n# not a heading\n```\nIntro\n\n## Real *Title* ##\nbody\n"
    (d / "a.md").write_text(md)
    (d / "b" / "setext.md").write_text("Setext Title\n============\n\ntext\n")
    (d / "b" / "deep" / "none.md").write_text("no heading here\n")
    (d / "b" / "latin.txt").write_bytes(b"caf\xe9\n")
    (d / "b" / "empty.txt").write_text("  \n")
    (d / "ignored.rst").write_text("skip")
    assert count_records(d) == 6
    recs, rejs = split(read_records(d))
    assert [r.id for r in recs] == ["a.md", "b/deep/none.md", "b/setext.md", "z.txt"]
    titles = {r.id: r.title for r in recs}
    assert titles == {
        "a.md": "Real *Title*",
        "b/deep/none.md": "none",
        "b/setext.md": "Setext Title",
        "z.txt": "z",
    }
    assert recs[0].text.startswith("---\ntitle: fm") and all(r.line == 1 for r in recs)
    assert {r.id for r in rejs} == {"b/empty.txt", "b/latin.txt"}
    latin = next(r for r in rejs if r.id == "b/latin.txt")
    assert "UTF-8" in latin.reason and "byte offset 3" in latin.reason


def test_markdown_title_edge_cases() -> None:
    assert markdown_title("#hashtag\n# Real\n") == "Real"
    assert markdown_title("#\n\n   ### Closed ###\n") == "Closed"
    assert markdown_title("para\n---\n") == "para"
    assert markdown_title("no title") is None


# ------------------------------------------------------------------------------------------- real data


def test_scifact_slice(tmp_path: Path) -> None:
    from latentsearch.samples import SAMPLE_CORPUS as src  # real SciFact abstracts shipped in the package
    with open(src, "rb") as f:
        head = b"".join(next(f) for _ in range(20))
    p = tmp_path / "corpus.jsonl"
    p.write_bytes(head)
    recs, rejs = split(read_records(p))
    assert rejs == [] and len(recs) == 20
    originals = [json.loads(line) for line in head.splitlines()]
    assert [r.id for r in recs] == [o["_id"] for o in originals]
    assert [r.text for r in recs] == [o["text"] for o in originals]
    assert all(r.title for r in recs)
