"""The `links` processor: entity links per chunk, stored as nested `links`.

Each chunk gets `links: [{mention, start, end, entity_id, score}]` (offsets into the chunk text) from
spaCy spans linked against the KB `models.kb` by models/linker.py: alias/dense shortcuts first, the
trie-constrained LLM only for ambiguous mentions. Queries filter or boost on `links.entity_id`
(query/links.py).
"""

from __future__ import annotations

from typing import Any

from latentsearch.ingest.processors import Processor
from latentsearch.ingest.records import Chunk
from latentsearch.models.linker import LINK_FIELDS, EntityLinker


class LinkProcessor(Processor):
    name = "links"
    version = "1"

    def __init__(self, linker: EntityLinker):
        super().__init__()
        self.linker = linker

    def fingerprint(self) -> str:
        return f"{self.name}:{self.version}:{self.linker.fingerprint}"

    def compute(self, texts: list[str]) -> list[Any]:
        return [[link.model_dump(include=LINK_FIELDS) for link in row] for row in self.linker.link(texts)]

    def apply(self, chunk: Chunk, output: Any) -> None:
        chunk.links = [dict(x) for x in output]


def link_processor(settings) -> LinkProcessor:
    """The processor for the KB `models.kb`; a clear error when none is configured."""
    from latentsearch.models.linker import get_linker

    if not settings.models.kb:
        raise ValueError("ingest.links is on but no knowledge base is set: set `models.kb` to a JSONL KB "
                         "(LATENTSEARCH_MODELS__KB=kb.jsonl), e.g. one from `latentsearch kb build`")
    return LinkProcessor(get_linker(settings.models.kb, llm=settings.models.llm, device=settings.models.device))
