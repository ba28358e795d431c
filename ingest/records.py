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
