"""The typed records that flow through ingest: source records in, chunks through processors, rejects out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SourceRecord(BaseModel):
    """One input document as a reader produced it. `line` is 1-based in the source file
    (row number for CSV/Parquet, 1 for a whole-file .txt/.md document)."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_path: str | None = None
    line: int | None = None


class Rejected(BaseModel):
    """A record that could not be ingested; written to the dead-letter JSONL, never silently lost."""

    reason: str
    source_path: str | None = None
    line: int | None = None
    id: str | None = None
    raw: str | None = Field(None, description="The offending input, truncated to 2,000 characters")
    stage: str = Field("read", description="read | chunk | process | write")


class Chunk(BaseModel):
    """One chunk of a document: the unit that is enriched and indexed (`id` = `<doc id>#<chunk no>`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    doc_id: str
    no: int
    count: int
    text: str
    start: int = Field(description="Character offset of the chunk in the document text")
    end: int
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_path: str | None = None
    line: int | None = None
    # enrichment outputs, filled by processors
    vector: Any = Field(None, description="Dense vector (numpy float32 array or list)")
    latent: dict[str, list[str]] = Field(default_factory=dict)
    mentions: list[dict[str, Any]] = Field(default_factory=list)
    links: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.no}"

    def to_source(self) -> dict[str, Any]:
        """The indexed document (see latentsearch.mappings for the field list)."""
        src: dict[str, Any] = {
            "doc_id": self.doc_id,
            "chunk": {"no": self.no, "count": self.count, "start": self.start, "end": self.end},
            "text": self.text,
        }
        if self.title is not None:
            src["title"] = self.title
        if self.source_path is not None or self.line is not None:
            src["source"] = {k: v for k, v in (("path", self.source_path), ("line", self.line)) if v is not None}
        if self.metadata:
            src["metadata"] = self.metadata
        if self.vector is not None:
            src["vector"] = self.vector
        if self.latent:
            src["latent"] = self.latent
        if self.mentions:
            src["mentions"] = self.mentions
        if self.links:
            src["links"] = self.links
        return src


def record_problem(record: SourceRecord, *, max_depth: int, max_fields: int, max_field_chars: int) -> str | None:
    """Why a record cannot be indexed (None when it can): lone surrogates (which JSON escapes such as
    "\\ud800" decode to, and which no UTF-8 store holds), nesting, value count and string length
    over the configured limits. Iterative, so a 900-deep record cannot exhaust the stack."""
    stack: list[tuple[str, Any, int]] = [("id", record.id, 1), ("text", record.text, 1), ("title", record.title, 1),
                                         ("metadata", record.metadata, 1)]
    leaves = 0
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= max_depth:
                return f"`{where}` nests deeper than the limit of {max_depth} levels (backend.max_depth)"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str):
                    problem = _string_problem(k, f"a key in `{where}`", max_field_chars)
                    if problem:
                        return problem
                stack.append((f"{where}.{k}", v, depth + 1))
            continue
        leaves += 1
        if leaves > max_fields + 3:
            return f"the record has more than the limit of {max_fields} metadata values (backend.max_fields)"
        if isinstance(value, str):
            problem = _string_problem(value, f"`{where}`", max_field_chars)
            if problem:
                return problem
    return None


def _string_problem(value: str, what: str, max_chars: int) -> str | None:
    if len(value) > max_chars:
        return f"{what} has {len(value)} characters, over the limit of {max_chars} (backend.max_field_chars)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        return f"{what} holds a lone surrogate U+{code:04X} at character {err.start}: not valid Unicode text"
    return None
