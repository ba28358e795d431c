"""Token-based chunking with the embedder's own tokenizer, so a chunk is exactly what the model reads.

LentEx chunks at 512 tokens with an overlap of 10. all-MiniLM-L6-v2 reads at most 256 tokens, so
the default size is `min(512, model max - reserve)`: a longer chunk would be cut off by the
embedder and its tail never embedded. Offsets are character positions in the document text.
"""

from __future__ import annotations

from collections.abc import Iterator

from latentsearch.ingest.records import Chunk, SourceRecord

LENTEX_CHUNK_TOKENS = 512
LENTEX_OVERLAP = 10
# room for [CLS]/[SEP] and a short title prefix in the embedder input
TITLE_RESERVE_TOKENS = 32
# tokenise very long documents in windows of this many characters (fast tokenizers are linear,
# but one 10 MB call holds every offset in memory at once)
_WINDOW_CHARS = 200_000


def default_chunk_tokens(model_max_tokens: int | None) -> int:
    if not model_max_tokens:
        return LENTEX_CHUNK_TOKENS
    return max(16, min(LENTEX_CHUNK_TOKENS, model_max_tokens - TITLE_RESERVE_TOKENS))


class TokenChunker:
    """Split text into windows of `size` tokens overlapping by `overlap` tokens."""

    def __init__(self, tokenizer, size: int = LENTEX_CHUNK_TOKENS, overlap: int = LENTEX_OVERLAP,
                 model_max_tokens: int | None = None):
        """`model_max_tokens`: when given, a record's chunks shrink so that title + chunk + the two
        special tokens still fit the embedder (a long title would otherwise push the tail out)."""
        if overlap >= size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({size})")
        self.tokenizer = tokenizer
        self.size = size
        self.overlap = overlap
        self.model_max_tokens = model_max_tokens

    def size_for(self, title: str | None) -> int:
        if not title or not self.model_max_tokens:
            return self.size
        title_tokens = len(self.tokenizer(title, add_special_tokens=False, verbose=False)["input_ids"])
        return max(self.overlap + 16, min(self.size, self.model_max_tokens - 3 - title_tokens))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of every token (windowed for huge documents)."""
        spans: list[tuple[int, int]] = []
        start = 0
        while start < len(text):
            end = min(len(text), start + _WINDOW_CHARS)
            if end < len(text):
                # cut at whitespace so no word is split across windows
                cut = text.rfind(" ", start + _WINDOW_CHARS // 2, end)
                end = cut if cut > start else end
            enc = self.tokenizer(
                text[start:end], add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
            )
            spans.extend((start + a, start + b) for a, b in enc["offset_mapping"] if b > a)
            start = end
        return spans

    def spans(self, text: str, size: int | None = None) -> list[tuple[int, int]]:
        """Character (start, end) of each chunk of `size` tokens (default: the chunker's size)."""
        size = size or self.size
        offsets = self.token_offsets(text)
        if not offsets:
            return [(0, len(text))] if text.strip() else []
        step = size - self.overlap
        out = []
        for i in range(0, len(offsets), step):
            window = offsets[i : i + size]
            out.append((window[0][0], window[-1][1]))
            if i + size >= len(offsets):
                break
        return out

    def chunk(self, record: SourceRecord) -> list[Chunk]:
        spans = self.spans(record.text, self.size_for(record.title))
        return [
            Chunk(
                doc_id=record.id,
                no=no,
                count=len(spans),
                text=record.text[a:b],
                start=a,
                end=b,
                title=record.title,
                metadata=record.metadata,
                source_path=record.source_path,
                line=record.line,
            )
            for no, (a, b) in enumerate(spans)
        ]

    def iter_chunks(self, records: Iterator[SourceRecord]) -> Iterator[Chunk]:
        for record in records:
            yield from self.chunk(record)
