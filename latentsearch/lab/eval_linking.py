"""Linking evaluation: InKB micro-F1, share of mentions that needed the LLM, time per document with
and without the retriever shortcut, on a small real set (WNUT-17 dev tweets, latentsearch/lab/data/linking).

The set (see its DATA_CARD.md) links each gold WNUT-17 mention to a KB entity `<surface>:<type>`;
about a third of the surface forms also get a homonym of another type (a `Paris` person beside the
`Paris` location), so those mentions can only be resolved from context: they are the decision spans.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from pydantic import BaseModel

from latentsearch.models.kb import KBEntity, KnowledgeBase, load_kb, normalise_alias
from latentsearch.models.spans import Span, read_conll

DATA = Path(__file__).resolve().parent / "data" / "linking"

# hand-written glosses of the six WNUT-17 types: the description every entity of that type carries
TYPE_GLOSS = {
    "person": "a person: a named individual such as a musician, actor, athlete, politician, fictional character "
              "or social media user",
    "location": "a place: a city, country, state, street, neighbourhood, venue, school building or landmark",
    "corporation": "a company: a business, brand owner, broadcaster or retailer",
    "product": "a product: a device, vehicle, app, software, food, drink or other thing that is made or sold",
    "group": "a group: a band, sports team, political party, organisation or community of people",
    "creative work": "a creative work: a song, album, film, TV show, video series, book, game or artwork",
}
# the homonym a surface form gets when it is made ambiguous: the type most easily confused with the gold one
HOMONYM_TYPE = {"person": "location", "location": "person", "corporation": "product", "product": "corporation",
                "group": "creative work", "creative work": "person"}


class GoldMention(BaseModel):
    start: int
    end: int
    text: str
    entity_id: str


class LinkingDoc(BaseModel):
    id: str
    text: str
    mentions: list[GoldMention]


def entity_id(surface: str, etype: str) -> str:
    return f"{normalise_alias(surface).replace(' ', '_')}:{etype.replace(' ', '_')}"


def _ambiguous(form: str, every: int) -> bool:
    return int(hashlib.sha1(form.encode()).hexdigest(), 16) % every == 0


def build_set(conll: Path, out_dir: Path = DATA, *, max_mentions: int = 120,
              homonym_every: int = 3) -> tuple[KnowledgeBase, list[LinkingDoc]]:
    """First WNUT-17 dev sentences holding mentions, until `max_mentions`; KB of their surface forms."""
    docs: list[LinkingDoc] = []
    entities: dict[str, KBEntity] = {}
    n = 0
    for i, sent in enumerate(read_conll(conll)):
        if n >= max_mentions:
            break
        gold = [(s, t) for s, t in zip(sent.spans, sent.types, strict=True) if normalise_alias(s.text)]
        if not gold:
            continue
        mentions = []
        for span, etype in gold[: max_mentions - n]:
            eid = entity_id(span.text, etype)
            entities.setdefault(eid, KBEntity(id=eid, name=span.text, type=etype,
                                              description=f"{span.text}, {TYPE_GLOSS[etype]}"))
            mentions.append(GoldMention(start=span.start, end=span.end, text=span.text, entity_id=eid))
        n += len(mentions)
        docs.append(LinkingDoc(id=f"wnut17-dev-{i}", text=sent.text, mentions=mentions))
    for e in list(entities.values()):
        form = normalise_alias(e.name)
        other = HOMONYM_TYPE[e.type or "person"]
        hid = entity_id(e.name, other)
        if _ambiguous(form, homonym_every) and hid not in entities:
            entities[hid] = KBEntity(id=hid, name=e.name, type=other, description=f"{e.name}, {TYPE_GLOSS[other]}")
    kb = KnowledgeBase(sorted(entities.values(), key=lambda e: e.id))
    out_dir.mkdir(parents=True, exist_ok=True)
    kb.write(out_dir / "kb.jsonl")
    (out_dir / "docs.jsonl").write_text("".join(d.model_dump_json() + "\n" for d in docs), encoding="utf-8")
    return kb, docs


def load_set(data_dir: Path = DATA) -> tuple[KnowledgeBase, list[LinkingDoc]]:
    if not (data_dir / "docs.jsonl").is_file():
        raise FileNotFoundError(f"{data_dir}/docs.jsonl is missing: run `latentsearch data linking` to build the set")
    docs = [LinkingDoc.model_validate_json(x) for x in (data_dir / "docs.jsonl").read_text().splitlines() if x.strip()]
    return load_kb(data_dir / "kb.jsonl"), docs


class ArmScores(BaseModel):
    shortcut: bool
    precision: float
    recall: float
    micro_f1: float
    mentions: int
    llm_calls: int
    llm_share: float
    llm_forward_passes: int
    by_method: dict[str, int]
    seconds_per_doc: float
    ambiguous_accuracy: float | None = None


class LinkingReport(BaseModel):
    """`latentsearch eval linking --json` prints exactly this."""

    documents: int
    mentions: int
    kb_entities: int
    ambiguous_mentions: int
    llm: str
    with_shortcut: ArmScores
    without_shortcut: ArmScores
    speedup: float
    first_candidate_f1: float
    retriever_only_f1: float
    retriever_only_ambiguous_accuracy: float | None
    alias_candidate_recall: float


def _score(gold: list[set[tuple[int, int, str]]], pred: list[set[tuple[int, int, str]]]) -> tuple[float, float, float]:
    tp = sum(len(g & p) for g, p in zip(gold, pred, strict=True))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def evaluate(data_dir: Path = DATA, *, llm: str = "SmolLM2-135M-Instruct", device: str = "cpu",
             limit: int | None = None, progress: bool = False) -> LinkingReport:
    """Both arms over the same gold mentions (InKB: gold spans given, every gold entity is in the KB)."""
    from latentsearch.models.linker import EntityLinker

    kb, docs = load_set(data_dir)
    docs = docs[:limit] if limit else docs
    gold = [{(m.start, m.end, m.entity_id) for m in d.mentions} for d in docs]
    spans = [[Span(start=m.start, end=m.end, text=m.text, source="gold") for m in d.mentions] for d in docs]
    ambiguous = {(d.id, m.start) for d in docs for m in d.mentions if len(kb.lookup(m.text)) > 1}
    alias_recall = sum(m.entity_id in {e.id for e in kb.lookup(m.text)} for d in docs for m in d.mentions)
    first = [{(m.start, m.end, kb.lookup(m.text)[0].id) for m in d.mentions if kb.lookup(m.text)} for d in docs]

    arms = {}
    for shortcut in (True, False, None):  # None: shortcut, ambiguous mentions to the context ranker, no LLM
        linker = EntityLinker(kb, llm=llm, device=device, use_llm=shortcut is not None)
        if shortcut is not None:
            linker.disambiguator  # load outside the clock  # noqa: B018
        linker.retriever.search(["warm up"], 1)
        pred, amb_ok, started = [], [], time.perf_counter()
        for doc, sp in zip(docs, spans, strict=True):
            links = linker.link_spans(doc.text, sp, shortcut=shortcut is not False)
            pred.append({(x.start, x.end, x.entity_id) for x in links})
            golds = {(m.start, m.end): m.entity_id for m in doc.mentions}
            amb_ok += [golds[(x.start, x.end)] == x.entity_id for x in links if (doc.id, x.start) in ambiguous]
            if progress:
                print(f"\r{'shortcut' if shortcut else 'no-shortcut'} {len(pred)}/{len(docs)}", end="", flush=True)
        elapsed = time.perf_counter() - started
        p, r, f = _score(gold, pred)
        s = linker.stats
        arms[shortcut] = ArmScores(shortcut=shortcut is not False, precision=p, recall=r, micro_f1=f, mentions=s.mentions,
                                   llm_calls=s.llm_calls, llm_share=s.llm_calls / max(1, s.mentions),
                                   llm_forward_passes=s.llm_forward_passes, by_method=dict(s.by_method),
                                   seconds_per_doc=elapsed / max(1, len(docs)),
                                   ambiguous_accuracy=sum(amb_ok) / len(amb_ok) if amb_ok else None)
    if progress:
        print()
    n_mentions = sum(len(d.mentions) for d in docs)
    return LinkingReport(documents=len(docs), mentions=n_mentions, kb_entities=len(kb),
                         ambiguous_mentions=len(ambiguous), llm=llm, with_shortcut=arms[True],
                         without_shortcut=arms[False],
                         speedup=arms[False].seconds_per_doc / max(1e-9, arms[True].seconds_per_doc),
                         first_candidate_f1=_score(gold, first)[2], alias_candidate_recall=alias_recall / n_mentions,
                         retriever_only_f1=arms[None].micro_f1,
                         retriever_only_ambiguous_accuracy=arms[None].ambiguous_accuracy)


def main() -> None:  # python -m latentsearch.lab.eval_linking
    print(json.dumps(evaluate(progress=True).model_dump(), indent=2))


if __name__ == "__main__":
    main()
