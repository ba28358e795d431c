"""Readers: turn files on disk into a stream of `SourceRecord`s (and `Rejected`s for bad input).

Why a stream of both: ingest of a large corpus must never stop on one bad line, and no bad line may
vanish silently. Every input unit that cannot become a record is yielded as a `Rejected` (the caller
writes those to the dead-letter JSONL) and reading goes on with the next unit.

Formats (see `detect_format`; override with `format=`):

* ``jsonl``   - ``.jsonl`` / ``.ndjson`` (optionally ``.gz``); one JSON object per line. Read as
  bytes so one non-UTF-8 line is rejected while the rest of the file still lands. ``line`` = the
  physical line number (1-based; blank lines are skipped but still counted).
* ``csv`` / ``tsv`` - ``.csv`` / ``.tsv`` (optionally ``.gz``); the first row is the header.
  ``line`` = the physical line number the row starts on, as an editor shows it: the header is line 1,
  the first data row line 2 (a quoted field spanning several lines makes later rows start further
  down). Empty cells count as null. Field-size limit is raised process-wide (csv is module-global).
* ``parquet`` - streamed one row group / record batch at a time; ``line`` = 1-based row number.
* ``beir``    - a folder holding ``corpus.jsonl`` (``_id``, ``title``, ``text``, ``metadata``).
* ``textdir`` - a folder of ``.txt`` / ``.md`` files (recursive, sorted by relative path, hidden
  files and folders skipped); one document per file, ``id`` = POSIX path relative to the folder,
  ``title`` = first Markdown heading (``.md``) else the file stem, ``line`` = 1. `FieldMap` does
  not apply here.

Gzip is recognised by its magic bytes, so ``.jsonl.gz`` / ``.csv.gz`` (or a renamed file with
``format=``) is decompressed transparently.
"""

from __future__ import annotations

import base64
import codecs
import csv
import datetime as _dt
import decimal
import gzip
import hashlib
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from latentsearch.ingest.records import Rejected, SourceRecord

__all__ = [
    "SUPPORTED_FORMATS",
    "FieldMap",
    "count_records",
    "detect_format",
    "read_records",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("jsonl", "csv", "tsv", "parquet", "beir", "textdir")
_FORMAT_ALIASES = {"ndjson": "jsonl"}
_FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_TEXT_SUFFIXES = (".txt", ".md")
_BEIR_CORPUS = ("corpus.jsonl", "corpus.jsonl.gz")
_SUPPORTED_HELP = (
    "supported formats: jsonl (.jsonl, .ndjson), csv (.csv), tsv (.tsv) - each optionally .gz -, "
    "parquet (.parquet), beir (a folder holding corpus.jsonl), textdir (a folder of .txt/.md files); "
    "pass format=... to override detection"
)

RAW_MAX_CHARS = 2000
PARQUET_BATCH_ROWS = 512
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = codecs.BOM_UTF8
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"
_MISSING: Any = object()

Item = Union[SourceRecord, Rejected]


class FieldMap(BaseModel):
    """Which input fields become id / text / title / metadata of a `SourceRecord`.

    Paths may be dotted (``"doc.body"``): a literal key with that name wins, else the path is walked
    through nested objects. Defaults fit BEIR and most JSONL corpora.

    * ``id_field``: one field or a list of candidates tried in order; the first present, non-empty
      one is the id (default ``["_id", "id"]``: ``_id``, falling back to ``id``). Numbers become
      strings. No id at all -> a deterministic id derived from the source path string and line
      (``auto-<sha1[:16]>``); re-reading the same path gives the same ids.
    * ``text_field``: one field, or a list of fields whose non-empty values are joined with
      ``text_joiner`` (a blank line). Missing / null / empty / whitespace-only / non-string text
      rejects the record.
    * ``title_field``: optional; ``None`` disables titles. Empty titles become ``None``.
    * ``metadata_fields``: ``None`` (default) = every other non-null top-level field (id / text /
      title candidates excluded; a top-level ``metadata`` object is merged in, BEIR style, with
      top-level fields winning on clashes). A list = exactly those paths, kept at the same nesting
      (``"a.b"`` -> ``{"a": {"b": ...}}``); absent ones are skipped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id_field: str | list[str] = Field(default_factory=lambda: ["_id", "id"])
    text_field: str | list[str] = "text"
    title_field: str | None = "title"
    metadata_fields: list[str] | None = None
    text_joiner: str = "\n\n"

    @field_validator("id_field", "text_field")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names or any(not n for n in names):
            raise ValueError("needs at least one non-empty field name")
        return v

    @property
    def id_fields(self) -> tuple[str, ...]:
        return (self.id_field,) if isinstance(self.id_field, str) else tuple(self.id_field)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return (self.text_field,) if isinstance(self.text_field, str) else tuple(self.text_field)

    def reserved(self) -> tuple[str, ...]:
        """Fields that are not copied into default metadata (they already are id / text / title)."""
        title = (self.title_field,) if self.title_field else ()
        return self.id_fields + self.text_fields + title


DEFAULT_FIELDS = FieldMap()


class _Row(NamedTuple):
    """One parsed input object before field mapping; `raw` is the original text when cheap to keep."""

    line: int
    obj: dict[str, Any]
    raw: str | None


# ------------------------------------------------------------------------------------------- detection


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the format from the path: folder layout for directories, suffix (minus ``.gz``) for files.

    Raises ValueError listing the supported formats when nothing matches, so a typo in a path does
    not turn into an empty ingest.
    """
    p = Path(path)
    if p.is_dir():
        if any((p / name).is_file() for name in _BEIR_CORPUS):
            return "beir"
        if next(_iter_text_files(p), None) is not None:
            return "textdir"
        raise ValueError(
            f"cannot detect the format of folder {str(p)!r}: it holds neither corpus.jsonl (beir) "
            f"nor any .txt/.md files (textdir); {_SUPPORTED_HELP}"
        )
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
        if name.endswith(".parquet"):
            raise ValueError(f"{str(p)!r}: gzipped Parquet is not supported (Parquet compresses internally)")
    for suffix, fmt in _FILE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"cannot detect the format of {str(p)!r} from its name; {_SUPPORTED_HELP}")


def _resolve_format(p: Path, fmt: str | None) -> str:
    """Check an explicit format against the path kind, or detect one."""
    if fmt is None:
        return detect_format(p)
    fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; {_SUPPORTED_HELP}")
    if fmt == "textdir" and not p.is_dir():
        raise ValueError(f"format 'textdir' needs a folder, got {str(p)!r}")
    if fmt in ("jsonl", "csv", "tsv", "parquet") and p.is_dir():
        raise ValueError(f"format {fmt!r} needs a file, got the folder {str(p)!r}")
    if fmt == "beir" and p.is_dir() and _beir_corpus(p) is None:
        raise ValueError(f"format 'beir' needs a folder holding corpus.jsonl; none in {str(p)!r}")
    return fmt


def _beir_corpus(p: Path) -> Path | None:
    """The corpus file of a BEIR folder (or the file itself when given one)."""
    if p.is_file():
        return p
    for name in _BEIR_CORPUS:
        if (p / name).is_file():
            return p / name
    return None


# ------------------------------------------------------------------------------------------ public API


def read_records(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    fields: FieldMap | Mapping[str, Any] | None = DEFAULT_FIELDS,
    limit: int | None = None,
) -> Iterator[Item]:
    """Stream `SourceRecord`s and `Rejected`s from `path`, in file order.

    Arguments are checked eagerly (missing path, unknown format, bad field map raise here, not on
    the first `next()`); bad *content* never raises, it is yielded as `Rejected`. Duplicate ids within
    one call: the first occurrence wins, later ones are rejected naming the first line. `limit`
    stops after that many `SourceRecord`s (rejects met on the way are still yielded).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input not found: {str(p)!r}")
    fmt = _resolve_format(p, format)
    fm = _coerce_fields(fields)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return _read(p, fmt, fm, limit)


def count_records(path: str | os.PathLike[str], format: str | None = None) -> int:
    """Cheap estimate of the number of input records, for progress bars (not exact: blank lines,
    multi-line CSV fields and rejects are not accounted for)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input not found: {str(p)!r}")
    fmt = _resolve_format(p, format)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(p).metadata.num_rows)
    if fmt == "textdir":
        return sum(1 for _ in _iter_text_files(p))
    src = _beir_corpus(p) if fmt == "beir" else p
    assert src is not None
    lines = _count_lines(src)
    return max(lines - 1, 0) if fmt in ("csv", "tsv") else lines


def _coerce_fields(fields: FieldMap | Mapping[str, Any] | None) -> FieldMap:
    """Accept a FieldMap, a plain dict (config / CLI) or None (defaults)."""
    if fields is None:
        return DEFAULT_FIELDS
    if isinstance(fields, FieldMap):
        return fields
    return FieldMap.model_validate(dict(fields))


def _read(p: Path, fmt: str, fm: FieldMap, limit: int | None) -> Iterator[Item]:
    """Drive one format reader, map rows to records, drop duplicate ids, honour `limit`."""
    if limit == 0:
        return
    if fmt == "textdir":
        source: Iterator[_Row | Item] = _read_textdir(p)
        src_path = str(p)
    else:
        file = _beir_corpus(p) if fmt == "beir" else p
        assert file is not None
        src_path = str(file)
        if fmt in ("jsonl", "beir"):
            source = _read_jsonl(file)
        elif fmt in ("csv", "tsv"):
            source = _read_csv(file, "\t" if fmt == "tsv" else ",")
        else:
            source = _read_parquet(file, fm)
    seen: dict[str, int | None] = {}
    emitted = 0
    try:
        for item in source:
            if isinstance(item, _Row):
                item = _to_record(item, fm, src_path)
            if isinstance(item, Rejected):
                yield item
                continue
            first = seen.get(item.id, _MISSING)
            if first is not _MISSING:
                yield Rejected(
                    reason=f"line {item.line}: duplicate id {item.id!r}, first seen at line {first}; "
                    "the first occurrence wins",
                    source_path=item.source_path,
                    line=item.line,
                    id=item.id,
                    raw=_clip(item.text),
                )
                continue
            seen[item.id] = item.line
            yield item
            emitted += 1
            if limit is not None and emitted >= limit:
                return
    finally:
        source.close()  # type: ignore[attr-defined]  # generators: release the open file now


# --------------------------------------------------------------------------------------------- helpers


def _clip(s: str | None) -> str | None:
    """Dead-letter `raw` is capped so one 10 MB bad line does not bloat the reject file."""
    return None if s is None else s[:RAW_MAX_CHARS]


def _raw_of(obj: Any) -> str:
    """A JSON rendering of a parsed row, clipped, for rows that had no raw text (CSV / Parquet)."""
    try:
        return json.dumps(obj, ensure_ascii=False, default=str)[:RAW_MAX_CHARS]
    except (TypeError, ValueError):
        return repr(obj)[:RAW_MAX_CHARS]


def _json_type(v: Any) -> str:
    """JSON's name for a Python value, for messages users can match to their file."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _fields_hint(obj: Mapping[str, Any]) -> str:
    """'available fields: ...' so a wrong field name is fixed from the reject file alone."""
    keys = list(obj)
    if not keys:
        return "available fields: (none)"
    shown = ", ".join(repr(k) for k in keys[:30])
    return f"available fields: {shown}" + (f" (+{len(keys) - 30} more)" if len(keys) > 30 else "")


def _lookup(obj: Mapping[str, Any], path: str) -> Any:
    """Value at `path` (literal key first, then dotted walk), or `_MISSING`."""
    if path in obj:
        return obj[path]
    if "." not in path:
        return _MISSING
    cur: Any = obj
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _without(d: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """`d` minus the nested key at `parts` (copying only along the path); empty parents are dropped."""
    head = parts[0]
    if head not in d:
        return d
    out = dict(d)
    if len(parts) == 1:
        del out[head]
    elif isinstance(d[head], dict):
        inner = _without(d[head], parts[1:])
        if inner:
            out[head] = inner
        else:
            del out[head]
    return out


def _set_path(d: dict[str, Any], parts: list[str], value: Any) -> None:
    """Place `value` at a nested path, creating objects on the way."""
    for part in parts[:-1]:
        nxt = d.get(part)
        if not isinstance(nxt, dict):
            nxt = d[part] = {}
        d = nxt
    d[parts[-1]] = value


def _derived_id(source_path: str, line: int) -> str:
    """Stable id for a record without one: same path string + line -> same id on every run."""
    return "auto-" + hashlib.sha1(f"{source_path}:{line}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --------------------------------------------------------------------------------------- field mapping


def _to_record(row: _Row, fm: FieldMap, source_path: str) -> Item:
    """Apply the FieldMap to one parsed row: a SourceRecord, or a Rejected that says which field failed."""
    obj, line = row.obj, row.line

    def reject(reason: str, rid: str | None = None) -> Rejected:
        raw = _clip(row.raw) if row.raw is not None else _raw_of(obj)
        return Rejected(reason=f"line {line}: {reason}", source_path=source_path, line=line, id=rid, raw=raw)

    # id: first present, non-empty candidate
    rid: str | None = None
    for name in fm.id_fields:
        v = _lookup(obj, name)
        if v is _MISSING or v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            return reject(f"id field {name!r} is a {_json_type(v)}; expected a string or number")
        if isinstance(v, float):
            if v != v:  # NaN (e.g. a pandas-written null) counts as absent
                continue
            v = str(int(v)) if v.is_integer() else repr(v)
        v = str(v)
        if v.strip():
            rid = v
            break
    if rid is None:
        rid = _derived_id(source_path, line)

    # text: one field, or several joined
    parts: list[str] = []
    names = fm.text_fields
    present = False
    for name in names:
        v = _lookup(obj, name)
        if v is _MISSING:
            continue
        present = True
        if v is None:
            continue
        if not isinstance(v, str):
            return reject(
                f"text field {name!r} is a {_json_type(v)}, expected a string; {_fields_hint(obj)}", rid
            )
        if v.strip():
            parts.append(v)
    label = f"text field {names[0]!r}" if len(names) == 1 else f"text fields {list(names)!r}"
    if not present:
        what = f"{label} is missing" if len(names) == 1 else f"none of the {label} is present"
        return reject(f"{what}; {_fields_hint(obj)}", rid)
    if not parts:
        return reject(f"{label} is empty (null or whitespace only); {_fields_hint(obj)}", rid)
    text = parts[0] if len(parts) == 1 else fm.text_joiner.join(parts)

    # title: optional, scalar
    title: str | None = None
    if fm.title_field:
        v = _lookup(obj, fm.title_field)
        if isinstance(v, str):
            title = v.strip() or None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            title = str(v)

    return SourceRecord(
        id=rid,
        text=text,
        title=title,
        metadata=_metadata(obj, fm),
        source_path=source_path,
        line=line,
    )


def _metadata(obj: dict[str, Any], fm: FieldMap) -> dict[str, Any]:
    """Metadata per `FieldMap.metadata_fields` (see its docstring for the default rule)."""
    if fm.metadata_fields is not None:
        md: dict[str, Any] = {}
        for path in fm.metadata_fields:
            v = _lookup(obj, path)
            if v is _MISSING or v is None:
                continue
            _set_path(md, [path] if path in obj else path.split("."), v)
        return md
    reserved = fm.reserved()
    md = {}
    nested = obj.get("metadata")
    merge_nested = isinstance(nested, dict) and "metadata" not in reserved
    if merge_nested:
        md.update({k: v for k, v in nested.items() if v is not None})  # type: ignore[union-attr]
    for k, v in obj.items():
        if v is None or k in reserved or (merge_nested and k == "metadata"):
            continue
        md[k] = v
    for path in reserved:  # a dotted id/text/title path inside an object: drop just that leaf
        if "." in path and path not in obj:
            md = _without(md, path.split("."))
    return md


# ---------------------------------------------------------------------------------------- file opening


@contextmanager
def _open_bytes(path: Path) -> Iterator[IO[bytes]]:
    """Binary stream of the file, gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                yield g  # type: ignore[misc]
        else:
            yield f


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _count_lines(path: Path) -> int:
    """Newline count (plus a final unterminated line), in 1 MiB chunks."""
    n = 0
    last = b"\n"
    with _open_bytes(path) as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


# ----------------------------------------------------------------------------------------------- JSONL


def _read_jsonl(path: Path) -> Iterator[_Row | Rejected]:
    """One JSON object per line, decoded per line so a bad byte costs one line, not the file."""
    src = str(path)
    where = "of the decompressed file" if _is_gzip(path) else "of the file"
    lineno = 0
    offset = 0
    with _open_bytes(path) as f:
        it = iter(f)
        while True:
            try:
                bline = next(it)
            except StopIteration:
                return
            except (*_GZIP_ERRORS, OSError) as e:
                yield Rejected(
                    reason=f"after line {lineno}: compressed stream is corrupt or truncated ({e}); "
                    "the rest of the file could not be read",
                    source_path=src,
                    line=lineno + 1,
                )
                return
            lineno += 1
            start = offset
            offset += len(bline)
            if lineno == 1 and bline.startswith(_UTF8_BOM):
                bline = bline[len(_UTF8_BOM) :]
                start += len(_UTF8_BOM)
            try:
                text = bline.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = bline[e.start : e.start + 1].hex()
                yield Rejected(
                    reason=f"line {lineno}: not valid UTF-8 (byte 0x{bad} at position {e.start} of the line, "
                    f"byte offset {start + e.start} {where}); re-encode the file as UTF-8, "
                    "e.g. `iconv -f latin1 -t utf-8`",
                    source_path=src,
                    line=lineno,
                    raw=bline[: RAW_MAX_CHARS * 4].decode("utf-8", "backslashreplace")[:RAW_MAX_CHARS],
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield Rejected(
                    reason=f"line {lineno}: malformed JSON: {e.msg} (column {e.colno})",
                    source_path=src,
                    line=lineno,
                    raw=_clip(text),
                )
                continue
            except (ValueError, RecursionError) as e:
                yield Rejected(
                    reason=f"line {lineno}: malformed JSON: {e}",
                    source_path=src,
                    line=lineno,
                    raw=_clip(text),
                )
                continue
            if not isinstance(obj, dict):
                yield Rejected(
                    reason=f"line {lineno}: expected a JSON object, got a {_json_type(obj)}",
                    source_path=src,
                    line=lineno,
                    raw=_clip(text),
                )
                continue
            yield _Row(lineno, obj, text)


# ------------------------------------------------------------------------------------------- CSV / TSV


def _raise_csv_field_limit() -> None:
    """csv's default 128 KiB field cap would reject long documents; lift it as far as the C long allows."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _read_csv(path: Path, delimiter: str) -> Iterator[_Row | Rejected]:
    """Header + rows via the csv module; undecodable bytes reject only the row that holds them."""
    _raise_csv_field_limit()
    src = str(path)
    with _open_bytes(path) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        # strict: an unterminated quote raises at the end of the data instead of silently swallowing
        # every following row into one field
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        prev_end = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                start = prev_end + 1
                progressed = reader.line_num > prev_end
                prev_end = reader.line_num
                if "unexpected end of data" in str(e):
                    yield Rejected(
                        reason=f"line {start}: unterminated quoted field: a quote opened on this row is never "
                        f"closed, so lines {start}-{prev_end} (the rest of the file) would be read as one field; "
                        'close the quote or double the quote character ("") inside quoted text',
                        source_path=src, line=start,
                    )
                    return
                yield Rejected(reason=f"line {start}: malformed CSV row: {e}", source_path=src, line=start)
                if not progressed:
                    return
                continue
            except (*_GZIP_ERRORS, OSError) as e:
                yield Rejected(
                    reason=f"after line {prev_end}: compressed stream is corrupt or truncated ({e}); "
                    "the rest of the file could not be read",
                    source_path=src,
                    line=prev_end + 1,
                )
                return
            start = prev_end + 1
            prev_end = reader.line_num
            if not row:
                continue  # blank line
            if header is None:
                header = row
                dupes = sorted({h for h in row if row.count(h) > 1})
                if dupes:  # a dict row would keep only the last of the repeated columns
                    raise ValueError(
                        f"{src}: line {start}: the header repeats the column name(s) {dupes}; every column needs "
                        "a distinct name (rename the repeats), else their values would be silently dropped"
                    )
                continue
            raw_row = delimiter.join(row)
            for col, cell in enumerate(row):
                m = _SURROGATE.search(cell)
                if m:
                    name = header[col] if col < len(header) else f"#{col + 1}"
                    bad = m.group().encode("utf-8", "surrogateescape").hex()
                    yield Rejected(
                        reason=f"line {start}: not valid UTF-8 (byte 0x{bad} at character {m.start()} of "
                        f"column {name!r}); re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
                        source_path=src,
                        line=start,
                        raw=raw_row.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[
                            :RAW_MAX_CHARS
                        ],
                    )
                    break
            else:
                if len(row) > len(header):
                    yield Rejected(
                        reason=f"line {start}: row has {len(row)} fields but the header has {len(header)}; "
                        f"quote fields that contain the delimiter {delimiter!r}",
                        source_path=src,
                        line=start,
                        raw=_clip(raw_row),
                    )
                    continue
                obj = {h: (v if v != "" else None) for h, v in zip(header, row)}
                yield _Row(start, obj, None)


# --------------------------------------------------------------------------------------------- Parquet


def _jsonable(v: Any) -> Any:
    """Arrow gives datetimes, Decimals, bytes, tuples: make metadata JSON-friendly for every backend."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(b).decode("ascii")
    return str(v)


def _parquet_columns(schema_names: list[str], fm: FieldMap) -> list[str] | None:
    """Only the columns the FieldMap touches, when it names its metadata (default: all columns)."""
    if fm.metadata_fields is None:
        return None
    wanted: list[str] = []
    for path in (*fm.reserved(), *fm.metadata_fields):
        col = path if path in schema_names else path.split(".")[0]
        if col in schema_names and col not in wanted:
            wanted.append(col)
    return wanted


def _read_parquet(path: Path, fm: FieldMap) -> Iterator[_Row | Rejected]:
    """Row group by row group, batch by batch: memory stays bounded and a corrupt group costs only itself."""
    import pyarrow.parquet as pq

    src = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        yield Rejected(reason=f"not a readable Parquet file: {e}", source_path=src)
        return
    try:
        columns = _parquet_columns(pf.schema_arrow.names, fm)
        row_no = 0
        for rg in range(pf.metadata.num_row_groups):
            rg_rows = pf.metadata.row_group(rg).num_rows
            done = 0
            try:
                for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[rg], columns=columns):
                    for obj in batch.to_pylist():
                        done += 1
                        yield _Row(row_no + done, {k: _jsonable(v) for k, v in obj.items()}, None)
            except Exception as e:
                yield Rejected(
                    reason=f"rows {row_no + done + 1}-{row_no + rg_rows}: row group {rg} is unreadable: {e}",
                    source_path=src,
                    line=row_no + done + 1,
                )
            row_no += rg_rows
    finally:
        pf.close()


# ---------------------------------------------------------------------------------------- text folders


def _iter_text_files(root: Path) -> Iterator[Path]:
    """`.txt`/`.md` files under `root`, sorted by relative path, hidden entries skipped (e.g. .git)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.startswith(".") or not fn.lower().endswith(_TEXT_SUFFIXES):
                continue
            full = Path(dirpath) / fn
            found.append((full.relative_to(root).as_posix(), full))
    found.sort(key=lambda t: t[0])
    for _, full in found:
        yield full


_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_title(text: str) -> str | None:
    """First ATX (`# T`) or setext (`T` / `===`) heading, skipping front matter and fenced code."""
    lines = io.StringIO(text)
    first = True
    in_front = False
    fence: str | None = None
    prev: str | None = None  # previous paragraph line, for setext headings
    for raw in lines:
        line = raw.rstrip("\r\n")
        if first:
            first = False
            if line.strip() == "---":
                in_front = True
                continue
        if in_front:
            if line.strip() in ("---", "..."):
                in_front = False
            continue
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1) == fence:
                fence = None
            continue
        if m:
            fence, prev = m.group(1), None
            continue
        if prev is not None and _SETEXT.match(line):
            return prev.strip()
        m = _ATX.match(line)
        if m:
            title = (m.group(1) or "").strip()
            if title:
                return title
            prev = None
            continue
        prev = line if line.strip() else None
    return None


def _read_textdir(root: Path) -> Iterator[Item]:
    """One document per .txt/.md file; id = relative POSIX path, so it is stable across machines."""
    for full in _iter_text_files(root):
        rel = full.relative_to(root).as_posix()
        src = str(full)
        try:
            data = full.read_bytes()
        except OSError as e:
            yield Rejected(reason=f"cannot read file: {e}", source_path=src, line=1, id=rel)
            continue
        data = data.removeprefix(_UTF8_BOM)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Rejected(
                reason=f"not valid UTF-8 (byte 0x{data[e.start : e.start + 1].hex()} at byte offset "
                f"{e.start}); "
                "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
                source_path=src,
                line=1,
                id=rel,
                raw=data[: RAW_MAX_CHARS * 4].decode("utf-8", "backslashreplace")[:RAW_MAX_CHARS],
            )
            continue
        if not text.strip():
            yield Rejected(
                reason="file is empty (or whitespace only)", source_path=src, line=1, id=rel, raw=_clip(text)
            )
            continue
        title = markdown_title(text) if full.suffix.lower() == ".md" else None
        yield SourceRecord(id=rel, text=text, title=title or full.stem, source_path=src, line=1)
