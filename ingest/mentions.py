"""The `mentions` processor: one type-aware vector per entity mention, stored as nested `mentions`.

Each chunk gets `mentions: [{text, start, end, vector}]` (offsets into the chunk text, vector 500-d,
L2-normalised, from span detection + the LLM's mid-layer V projection + the trained head); a chunk
without entities stores none. `latentsearch entities "<type>"` queries them.
"""

from __future__ import annotations

from typing import Any

from latentsearch.ingest.processors import Processor
from latentsearch.ingest.records import Chunk
from latentsearch.models.mention_head import MentionVectorizer


class MentionProcessor(Processor):
    name = "mentions"
    version = "1"

    def __init__(self, vectorizer: MentionVectorizer):
        super().__init__()
        self.vectorizer = vectorizer

    def fingerprint(self) -> str:
        return f"{self.name}:{self.version}:{self.vectorizer.fingerprint}"

    def compute(self, texts: list[str]) -> list[Any]:
        return [[m.model_dump() for m in row] for row in self.vectorizer.vectorize(texts)]

    def apply(self, chunk: Chunk, output: Any) -> None:
        chunk.mentions = [dict(m) for m in output]


def mention_processor(settings) -> MentionProcessor:
    """The processor configured by `models.mention_head` (`default` = the shipped SmolLM2 head)."""
    from pathlib import Path

    from latentsearch.models.mention_head import ARTIFACT, get_vectorizer

    head = ARTIFACT if settings.models.mention_head == "default" else Path(settings.models.mention_head).expanduser()
    return MentionProcessor(get_vectorizer(head, settings.models.device))
