"""The synthetic fine-grained typed-mention set (`latentsearch/lab/data/typed_mentions/`).

Zero-shot type retrieval needs many types at training time; WNUT-17 has six. We hand-wrote
`entities.tsv` (184 fine types in 9 coarse categories, 5-8 real names each) and put each name into
context with category-level templates, so that the sentence says *what kind of thing* it is only
coarsely (a place, a product…) and the fine type (river vs lake) must come from the LLM's knowledge
of the name. Deterministic (seeded); `latentsearch data typed-mentions` rebuilds the JSONL.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import BaseModel

DATA_DIR = Path(__file__).resolve().parent / "data" / "typed_mentions"
ENTITIES = DATA_DIR / "entities.tsv"
JSONL = DATA_DIR / "typed_mentions.jsonl"

TEMPLATES: dict[str, list[str]] = {
    "person": ["I have been reading a lot about {} lately.", "My grandfather used to talk about {} all the time.",
               "There is a new documentary about {} on tonight.", "Did you know that {} once lived near here?",
               "Everyone in class had to write an essay on {}.", "honestly {} is overrated, change my mind"],
    "place": ["We spent three days near {} last summer.", "The photos from {} look unreal.",
              "Has anyone here been to {}? Worth the trip?", "A documentary crew filmed at {} this spring.",
              "My cousin just moved close to {}.", "traffic around {} was terrible this morning lol"],
    "org": ["{} announced a major restructuring today.", "My sister got a job offer from {}.",
            "I have been a fan of {} since I was a kid.", "The report criticised {} for its decisions.",
            "{} posted record results this quarter.", "cant believe what {} did this week smh"],
    "product": ["I finally tried {} and I am impressed.", "The new version of {} came out yesterday.",
                "My dad still swears by {}.", "We compared {} with its rivals in the review.",
                "Anyone else having trouble with {}?", "{} is honestly the best thing ever made"],
    "work": ["Last night I finally watched or read {}.", "Our teacher made us study {} for weeks.",
             "{} is still my favourite of all time.", "The critics were divided about {}.",
             "We talked about {} for hours after class.", "cant stop thinking about {} tbh"],
    "organism": ["We saw a {} during the field trip.", "The museum has a whole room about the {}.",
                 "My daughter drew a {} for her school project.", "Researchers studied the {} for years.",
                 "There was a program about the {} on TV.", "the {} is seriously underrated"],
    "substance": ["I had {} for the first time yesterday.", "The shop was out of {} again.",
                  "She recommended {} to me.", "There is a long history behind {}.",
                  "We ordered more {} for the party.", "{} is way better than people say"],
    "event": ["My history teacher loves talking about {}.", "People still argue about {}.",
              "There is a new book about {}.", "{} changed a lot of lives.",
              "We watched a documentary on {} last night.", "cant believe {} happened like that"],
    "concept": ["I started learning about {} this year.", "The lecture today was all about {}.",
                "My friend is obsessed with {}.", "There is a great podcast episode on {}.",
                "{} is harder to explain than it looks.", "ok but {} is actually fascinating"],
}


class TypedMention(BaseModel):
    """One sentence with one typed mention (`text[start:end] == mention`)."""

    text: str
    start: int
    end: int
    mention: str
    type: str
    category: str


def read_entities(path: Path = ENTITIES) -> dict[str, tuple[str, list[str]]]:
    """type -> (category, names) from the hand-written TSV."""
    out: dict[str, tuple[str, list[str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        etype, category, names = line.split("\t")
        if category not in TEMPLATES:
            raise ValueError(f"{path}: unknown category {category!r} for type {etype!r}")
        out[etype] = (category, [n.strip() for n in names.split("|") if n.strip()])
    return out


def build(per_name: int = 2, seed: int = 13, path: Path = ENTITIES) -> list[TypedMention]:
    """`per_name` sentences per (type, name), each with a different template of the type's category."""
    rng = random.Random(seed)
    rows: list[TypedMention] = []
    for etype, (category, names) in read_entities(path).items():
        for name in names:
            for template in rng.sample(TEMPLATES[category], per_name):
                start = template.index("{}")
                text = template.replace("{}", name, 1)
                rows.append(TypedMention(text=text, start=start, end=start + len(name), mention=name, type=etype,
                                         category=category))
    return rows


def write(rows: list[TypedMention], path: Path = JSONL) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows), encoding="utf-8")
    return path


def load(path: Path = JSONL) -> list[TypedMention]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `latentsearch data typed-mentions` to build it")
    return [TypedMention.model_validate(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]
