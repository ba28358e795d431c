"""The knowledge base entity links point into: typed entities with aliases and a description.

A KB is a JSONL file, one `KBEntity` a line. It comes from a user file or is derived from an
ingested index (`build_kb_from_index`): each distinct latent-entity value becomes an entity of its
latent type, and each mention text seen at least `min_mentions` times becomes an entity of type
`mention`. The alias index (normalised surface form -> entity ids) is the first candidate source.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator


class KBEntity(BaseModel):
    """One linkable entity; `id` is what ends up in `links.entity_id`."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    type: str | None = None

    @field_validator("id", "name")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be blank")
        return v

    @property
    def label(self) -> str:
        """What the generative disambiguator writes: the name, plus the type to tell homonyms apart."""
        return f"{self.name} ({self.type})" if self.type else self.name

    def embedding_text(self) -> str:
        return f"{self.name}: {self.description}" if self.description else self.name


def normalise_alias(text: str) -> str:
    """Case-, accent- and punctuation-insensitive surface form: `#Redondo-Beach` -> `redondo beach`."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w]+", " ", text).replace("_", " ")
    return " ".join(text.split())


class KnowledgeBase:
    """Entities by id plus the alias index; immutable after construction."""

    def __init__(self, entities: Iterable[KBEntity]):
        self.entities: list[KBEntity] = []
        self.by_id: dict[str, KBEntity] = {}
        for e in entities:
            if e.id in self.by_id:
                raise ValueError(f"duplicate entity id {e.id!r} in the knowledge base: ids must be unique")
            self.by_id[e.id] = e
            self.entities.append(e)
        self.alias_index: dict[str, list[str]] = defaultdict(list)
        for e in self.entities:
            for form in {normalise_alias(a) for a in [e.name, *e.aliases]} - {""}:
                self.alias_index[form].append(e.id)

    def __len__(self) -> int:
        return len(self.entities)

    def lookup(self, surface: str) -> list[KBEntity]:
        """Entities whose name or an alias has this normalised surface form (in KB order)."""
        return [self.by_id[i] for i in self.alias_index.get(normalise_alias(surface), [])]

    @property
    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for e in self.entities:
            h.update(e.model_dump_json().encode())
        return h.hexdigest()[:16]

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(e.model_dump_json(exclude_defaults=True) + "\n" for e in self.entities),
                        encoding="utf-8")
        return path


def load_kb(path: str | Path) -> KnowledgeBase:
    """Read a JSONL knowledge base; errors name the line and say what a line must hold."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"knowledge base {path} does not exist: write one entity per line as JSON "
                                '({"id", "name", "aliases", "description", "type"}) or build one from an index '
                                "with `latentsearch kb build --index NAME --out kb.jsonl`")
    entities = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entities.append(KBEntity.model_validate_json(line))
        except ValidationError as exc:
            raise ValueError(f"{path}:{no}: not a KB entity (needs at least `id` and `name`): "
                             f"{exc.errors()[0]['msg']}") from None
    if not entities:
        raise ValueError(f"knowledge base {path} holds no entities")
    return KnowledgeBase(entities)


def _slug(text: str) -> str:
    return normalise_alias(text).replace(" ", "_")[:80] or "x"


def kb_from_values(latent: dict[str, Counter], mentions: Counter, *, min_mentions: int = 2,
                   extra: Iterable[KBEntity] = ()) -> KnowledgeBase:
    """Entities from counted latent values (per type) and mention texts; `extra` (a user file) wins on ids."""
    out: dict[str, KBEntity] = {}
    for etype, values in sorted(latent.items()):
        for value, n in values.most_common():
            eid = f"{_slug(etype)}:{_slug(value)}"
            if eid not in out:
                out[eid] = KBEntity(id=eid, name=value, type=etype,
                                    description=f"{value}, a {etype} (latent entity of {n} chunks)")
    surfaces: dict[str, Counter] = defaultdict(Counter)
    for text, n in mentions.items():
        surfaces[normalise_alias(text)][text] += n
    for form, variants in sorted(surfaces.items()):
        total = sum(variants.values())
        if not form or total < min_mentions:
            continue
        name = variants.most_common(1)[0][0]
        eid = f"mention:{_slug(form)}"
        aliases = sorted(set(variants) - {name})
        out.setdefault(eid, KBEntity(id=eid, name=name, aliases=aliases, type="mention",
                                     description=f"{name}, mentioned {total} times in the corpus"))
    for e in extra:
        out[e.id] = e
    return KnowledgeBase(out.values())


def build_kb_from_index(backend: Any, index: str, *, min_mentions: int = 2, max_docs: int = 100_000,
                        extra: Iterable[KBEntity] = ()) -> KnowledgeBase:
    """Derive a KB from an ingested index: distinct `latent.<type>` values and frequent `mentions.text`."""
    if not backend.index_exists(index):
        raise ValueError(f"index `{index}` does not exist: ingest a corpus first (`latentsearch ingest FILE --index "
                         f"{index}`)")
    body = {"query": {"match_all": {}}, "size": max_docs, "_source": ["latent", "mentions"]}
    hits = backend.search(index, body)["hits"]["hits"]
    latent: dict[str, Counter] = defaultdict(Counter)
    mentions: Counter = Counter()
    for hit in hits:
        src = hit.get("_source") or {}
        for etype, values in (src.get("latent") or {}).items():
            for v in values if isinstance(values, list) else [values]:
                if isinstance(v, str) and v.strip():
                    latent[etype][v.strip()] += 1
        for m in src.get("mentions") or []:
            if isinstance(m, dict) and str(m.get("text", "")).strip():
                mentions[str(m["text"]).strip()] += 1
    kb = kb_from_values(latent, mentions, min_mentions=min_mentions, extra=extra)
    if not len(kb):
        raise ValueError(f"index `{index}` holds no latent-entity values and no mention seen {min_mentions}+ times: "
                         "ingest with latent types (`--latent-types`) or `LATENTSEARCH_INGEST__MENTIONS=true`, or "
                         "give a KB file")
    return kb


def dumps_entity(e: KBEntity) -> str:
    return json.dumps(e.model_dump(exclude_defaults=True), ensure_ascii=False)
