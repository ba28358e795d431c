"""One value vocabulary per index and latent type: the raw values the extractor wrote, grouped into
canonical concepts.

    vocab = update_index_vocabulary(backend, "papers", get_embedder())   # after ingest (the pipeline does it)
    vocab.names("anatomy")                       # what the question side may choose from
    vocab.terms_for("anatomy", "t cell")         # the stored forms a filter on that concept must match
    dsl.terms("latent.anatomy", vocab.terms_for("anatomy", "t cell"))

Why: generated values vary in wording ("T-cells", "t cell", "T lymphocytes"), so a filter on one
string misses documents that say the same thing differently. Documents keep what the model said in
`latent.<type>`; the vocabulary maps those raw forms to concepts, and a filter on a concept expands
to a `terms` clause over all its forms. Curation (merge, rename, drop) edits only the vocabulary,
never the documents, so it works the same on every backend and needs no update-by-query.

Building: normalise (case, punctuation, accents, simple plurals), then greedy single-link clustering
by MiniLM cosine in order of descending frequency (a form joins the concept of its most similar
already-placed form when the cosine reaches `threshold`); the canonical name is the most frequent
form. Updating runs the same algorithm with the existing concepts already placed, so user edits
(renamed, merged, dropped concepts) keep their forms and attract new ones. Dropped concepts are
remembered (a rebuild does not bring their forms back) and never offered to the question side.

Storage: a sidecar index `vocab_index(index)` on the same backend, one document per concept plus a
header document, written in generations (new documents, then the header that points at them, then
old documents deleted), so a crash mid-save leaves the previous vocabulary readable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr, model_validator

from latentsearch import dsl
from latentsearch.backends import BulkAction, SearchBackend
from latentsearch.mappings import schema_from_mapping

log = logging.getLogger(__name__)

LATENT_PREFIX = "latent."
VOCAB_SUFFIX = "-latent-vocab"
DEFAULT_THRESHOLD = 0.85  # MiniLM cosine; chosen on real SciFact values (see README "Value vocabulary")
MAX_VALUES = 50_000  # distinct raw values read per type (terms aggregation size)
PAGE = 5_000  # concept documents read per request (below OpenSearch's 10,000 result window)
FORMAT = 1
_NAME_MAX = 255  # bytes: OpenSearch's and the embedded engine's index-name limit


# ---------------------------------------------------------------- normalisation


def normalise(value: str) -> str:
    """The key two wordings of one value share: lowercase, accents and punctuation dropped, spaces
    collapsed, a simple plural removed ('T-cells', 't cell' and 'T cells' meet; 'sepsis' and
    'virus' keep their s). A key, not a display form."""
    v = unicodedata.normalize("NFKD", value)
    v = "".join(c for c in v if not unicodedata.combining(c)).lower()
    v = re.sub(r"[\W_]+", " ", v).strip()
    v = re.sub(r"(?<=\w\w)ies\b", "y", v)
    return re.sub(r"(?<=\w\w[^\Wsui])s\b", "", v)


# ---------------------------------------------------------------- the model


class Concept(BaseModel):
    """One canonical value of a latent type and every form that means it."""

    type: str
    name: str = Field(min_length=1, description="The canonical value (most frequent form unless renamed)")
    aliases: list[str] = Field(default_factory=list, description="Every form a filter matches: stored raw values "
                                                                 "and user aliases; the name is one of them")
    count: int = Field(0, ge=0, description="Chunks holding any of the forms")
    user_edited: bool = Field(False, description="Renamed, merged or dropped by a user: kept by updates and rebuilds")
    dropped: bool = Field(False, description="Never offered to the question side; its forms stay attached to it")

    @model_validator(mode="after")
    def _name_is_a_form(self) -> Concept:
        if self.name not in self.aliases:
            self.aliases.insert(0, self.name)
        self.aliases = list(dict.fromkeys(self.aliases))
        return self


class Vocabulary(BaseModel):
    """The concepts of every latent type of one index (also the export/import JSON format)."""

    index: str
    concepts: dict[str, list[Concept]] = Field(default_factory=dict, description="latent type -> concepts")
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0, le=1, description="Cosine for two forms to share a concept")
    model: str | None = Field(None, description="The embedder that clustered the forms")
    version: int = Field(0, ge=0, description="Incremented by every save")
    updated_at: str | None = None
    format: int = FORMAT

    _forms: dict[str, dict[str, Concept]] = PrivateAttr(default_factory=dict)
    _keys: dict[str, dict[str, Concept]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Vocabulary:
        for etype, concepts in self.concepts.items():
            seen: dict[str, str] = {}
            for c in concepts:
                if c.type != etype:
                    raise ValueError(f"concept {c.name!r} has type {c.type!r} but is listed under {etype!r}")
                for form in c.aliases:
                    if form in seen and seen[form] != c.name:
                        raise ValueError(f"{etype}: the form {form!r} belongs to both {seen[form]!r} and {c.name!r}")
                    seen[form] = c.name
        self.reindex()
        return self

    def reindex(self) -> None:
        """Rebuild the form -> concept lookups (after any direct edit of `concepts`)."""
        self._forms, self._keys = {}, {}
        for etype, concepts in self.concepts.items():
            forms, keys = self._forms.setdefault(etype, {}), self._keys.setdefault(etype, {})
            for c in concepts:
                for form in c.aliases:
                    forms[form] = c
                    keys.setdefault(normalise(form), c)

    # -- reading (the question side) -----------------------------------------------------------

    @property
    def types(self) -> list[str]:
        return list(self.concepts)

    def concept_of(self, etype: str, raw: str, *, include_dropped: bool = False) -> Concept | None:
        """The concept a value belongs to: an exact form, else the same normalised key. None when
        unknown (or dropped, unless `include_dropped`)."""
        c = self._forms.get(etype, {}).get(raw) or self._keys.get(etype, {}).get(normalise(raw))
        return c if c is not None and (include_dropped or not c.dropped) else None

    def get(self, etype: str, name: str) -> Concept:
        """The concept called `name` (dropped ones included); a clear error otherwise."""
        for c in self.concepts.get(etype, []):
            if c.name == name:
                return c
        if etype not in self.concepts:
            raise KeyError(f"no latent type {etype!r} in the vocabulary of `{self.index}`; types: {self.types}")
        near = self.concept_of(etype, name, include_dropped=True)
        hint = f"; {name!r} is a form of the concept {near.name!r}" if near is not None else ""
        raise KeyError(f"no concept {name!r} of type {etype!r} in the vocabulary of `{self.index}`{hint}")

    def names(self, etype: str, *, min_count: int = 1) -> list[str]:
        """Concept names the question side may choose from: not dropped, held by at least `min_count`
        chunks, most frequent first."""
        keep = [c for c in self.concepts.get(etype, []) if not c.dropped and c.count >= min_count]
        return [c.name for c in sorted(keep, key=lambda c: (-c.count, c.name))]

    def terms_for(self, etype: str, name: str) -> list[str]:
        """The stored forms a filter on concept `name` must match (for a `terms` clause on latent.<type>)."""
        c = self.get(etype, name)
        if c.dropped:
            raise ValueError(f"the concept {name!r} of type {etype!r} was dropped from the vocabulary of "
                             f"`{self.index}`: it is not used for filtering (`latentsearch vocab restore`)")
        return list(c.aliases)

    def filter_clause(self, etype: str, names: Iterable[str]) -> dict[str, Any]:
        """One `terms` clause on latent.<type> matching any form of any of the named concepts."""
        forms = list(dict.fromkeys(f for n in names for f in self.terms_for(etype, n)))
        return dsl.terms(LATENT_PREFIX + etype, forms)

    # -- curation --------------------------------------------------------------------------------

    def merge(self, etype: str, src: str, dst: str) -> Concept:
        """Fold concept `src` into `dst`: every form of src now means dst. Counts are refreshed on save."""
        if src == dst:
            raise ValueError(f"cannot merge {src!r} into itself")
        a, b = self.get(etype, src), self.get(etype, dst)
        b.aliases = list(dict.fromkeys([*b.aliases, *a.aliases]))
        b.count += a.count  # an upper bound until refresh_counts (a chunk may hold both)
        b.user_edited = True
        self.concepts[etype].remove(a)
        self.reindex()
        return b

    def rename(self, etype: str, old: str, new: str) -> Concept:
        """Give a concept a new canonical name; the new name also becomes one of its forms."""
        new = new.strip()
        if not new:
            raise ValueError("the new name is empty")
        c = self.get(etype, old)
        other = self._forms.get(etype, {}).get(new) or self._keys.get(etype, {}).get(normalise(new))
        if other is not None and other is not c:
            raise ValueError(f"{new!r} is already a form of the concept {other.name!r} of type {etype!r}: "
                             f"use `merge --type {etype} {old!r} {other.name!r}` to join them")
        c.name = new
        c.aliases = list(dict.fromkeys([new, *c.aliases]))
        c.user_edited = True
        self.reindex()
        return c

    def drop(self, etype: str, name: str) -> Concept:
        """Stop offering a concept to the question side (a wrong or useless value); its forms stay
        attached so updates and rebuilds do not bring it back."""
        c = self.get(etype, name)
        c.dropped = c.user_edited = True
        return c

    def restore(self, etype: str, name: str) -> Concept:
        """Undo `drop`."""
        c = self.get(etype, name)
        c.dropped = False
        c.user_edited = True
        return c

    def user_edits(self) -> Vocabulary:
        """Only the concepts a user touched: what a rebuild starts from."""
        kept = {t: [c.model_copy(deep=True) for c in cs if c.user_edited] for t, cs in self.concepts.items()}
        return self.model_copy(update={"concepts": {t: cs for t, cs in kept.items() if cs}}, deep=True)

    # -- export / import -------------------------------------------------------------------------

    def export(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def import_(cls, text: str | bytes) -> Vocabulary:
        return cls.model_validate_json(text)


# ---------------------------------------------------------------- building and updating


def build_vocabulary(values: Mapping[str, Mapping[str, int]], embedder, threshold: float = DEFAULT_THRESHOLD,
                     index: str = "") -> Vocabulary:
    """A vocabulary from scratch. `values`: latent type -> raw value -> chunks holding it."""
    return update_vocabulary(Vocabulary(index=index, threshold=threshold), values, embedder)


def update_vocabulary(vocab: Vocabulary, values: Mapping[str, Mapping[str, int]], embedder,
                      threshold: float | None = None) -> Vocabulary:
    """A new vocabulary with `values` (the index's complete current values) placed in it: a new raw
    form joins the concept holding the same normalised key, else the concept of its most similar
    placed form (cosine >= threshold), else starts a concept. User-edited concepts keep their names
    and forms; untouched concepts lose forms the index no longer holds (and disappear when none is
    left) and are named after their most frequent form. Counts are per-form sums until
    `refresh_counts` makes them exact."""
    out = vocab.model_copy(deep=True)
    if threshold is not None:
        out.threshold = threshold
    out.model = getattr(embedder, "name", None) or out.model
    for etype in dict.fromkeys([*out.concepts, *values]):
        out.concepts[etype] = _update_type(etype, out.concepts.get(etype, []), dict(values.get(etype, {})),
                                           embedder, out.threshold)
    out.concepts = {t: cs for t, cs in out.concepts.items() if cs}
    out.reindex()
    return out


def _update_type(etype: str, concepts: list[Concept], counts: dict[str, int], embedder,
                 threshold: float) -> list[Concept]:
    counts = {str(k): int(v) for k, v in counts.items() if str(k).strip()}
    kept: list[Concept] = []
    for c in concepts:
        if not c.user_edited:
            c.aliases = [f for f in c.aliases if f in counts]
            if not c.aliases:
                continue  # its values left the index
        kept.append(c)
    forms = {f: c for c in kept for f in c.aliases}
    keys: dict[str, Concept] = {}
    for c in kept:
        for f in c.aliases:
            keys.setdefault(normalise(f), c)

    # new raw forms, grouped by normalised key; a key an existing concept holds joins it directly
    units: dict[str, list[str]] = {}
    for raw in sorted((r for r in counts if r not in forms), key=lambda r: (-counts[r], r)):
        key = normalise(raw)
        if key in keys:
            keys[key].aliases.append(raw)
        else:
            units.setdefault(key, []).append(raw)
    order = sorted(units, key=lambda k: (-sum(counts[r] for r in units[k]), units[k][0]))

    if order:
        # placed forms: one representative per normalised key of every existing concept
        placed: list[tuple[str, Concept]] = []
        for c in kept:
            reps: dict[str, str] = {}
            for f in sorted(c.aliases, key=lambda f: -counts.get(f, 0)):
                reps.setdefault(normalise(f), f)
            placed += [(rep, c) for rep in reps.values()]
        texts = [rep for rep, _ in placed] + [units[k][0] for k in order]
        vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        owners: list[Concept] = [c for _, c in placed]
        nearest, similarity = _nearest_earlier(vectors, start=len(placed))
        for i, key in enumerate(order):
            owner = owners[nearest[i]] if nearest[i] >= 0 and similarity[i] >= threshold else None
            if owner is None:
                owner = Concept(type=etype, name=units[key][0], aliases=list(units[key]))
                kept.append(owner)
            else:
                owner.aliases.extend(units[key])
            owners.append(owner)

    for c in kept:
        c.aliases = _ordered(c, counts)
        if not c.user_edited:
            c.name = c.aliases[0]
        c.count = sum(counts.get(f, 0) for f in c.aliases)
    return sorted(kept, key=lambda c: (-c.count, c.name))


def _nearest_earlier(vectors: np.ndarray, start: int, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each row p >= start: the most similar row before it (-1 for row 0) and that cosine; in
    blocks of matrix products (the greedy order makes "placed before" the same as "row before")."""
    n = len(vectors)
    nearest = np.full(n - start, -1, dtype=np.int64)
    similarity = np.full(n - start, -np.inf, dtype=np.float32)
    for a in range(start, n, block):
        b = min(a + block, n)
        sims = vectors[a:b] @ vectors[:b].T
        sims[np.arange(b - a)[:, None] <= np.arange(b)[None, :] - a] = -np.inf  # only earlier rows
        best = np.argmax(sims, axis=1)
        got = sims[np.arange(b - a), best]
        ok = np.isfinite(got)
        nearest[a - start : b - start] = np.where(ok, best, -1)
        similarity[a - start : b - start] = got
    return nearest, similarity


def _ordered(c: Concept, counts: Mapping[str, int]) -> list[str]:
    """Forms by descending count (user aliases the index does not hold last), the name first on ties."""
    forms = list(dict.fromkeys(c.aliases))
    return sorted(forms, key=lambda f: (-counts.get(f, 0), f != c.name, f))


# ---------------------------------------------------------------- storage: the sidecar index


def vocab_index(index: str) -> str:
    """The sidecar index that holds `index`'s vocabulary."""
    name = f"{index}{VOCAB_SUFFIX}"
    if index.endswith(VOCAB_SUFFIX):
        raise ValueError(f"`{index}` is itself a vocabulary index; name the index it belongs to")
    if len(name.encode()) > _NAME_MAX:
        raise ValueError(f"index name `{index}` is too long for a vocabulary index (`{VOCAB_SUFFIX}` is appended; "
                         f"at most {_NAME_MAX - len(VOCAB_SUFFIX)} bytes)")
    return name


def vocab_index_body() -> dict[str, Any]:
    """The sidecar's create-index body (valid OpenSearch; the Elasticsearch and embedded backends take it too)."""
    keyword = {"type": "keyword"}
    return {
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {"latentsearch_vocabulary": {"format": FORMAT}},
            "properties": {
                "kind": keyword,  # concept | header | policy (query/policy.py: the fitted latent policy)
                "generation": {"type": "long"},
                "seq": {"type": "integer"},
                "type": keyword,
                "name": keyword,
                "aliases": keyword,
                "count": {"type": "integer"},
                "user_edited": {"type": "boolean"},
                "dropped": {"type": "boolean"},
                "index": keyword,
                "threshold": {"type": "float"},
                "model": keyword,
                "version": {"type": "integer"},
                "updated_at": keyword,
                "concepts": {"type": "integer"},
                "format": {"type": "integer"},
                "policy": keyword,  # the fitted LatentPolicy as JSON (`latentsearch tune strictness`)
            },
        },
    }


HEADER_ID = "header"


def header_body() -> dict[str, Any]:
    """The search that reads the header document."""
    return {"size": 1, "query": dsl.bool_query(filter=[dsl.term("kind", "header")])}


def page_body(generation: int, start: int, size: int = PAGE) -> dict[str, Any]:
    """The search that reads concept documents seq in [start, start + size) of one generation."""
    query = dsl.bool_query(filter=[dsl.term("kind", "concept"), dsl.term("generation", generation),
                                   dsl.range_("seq", gte=start, lt=start + size)])
    return {"size": size, "query": query}


def stale_body(generation: int, size: int = PAGE) -> dict[str, Any]:
    """The search for concept documents of other generations (left by older saves or a crashed one)."""
    query = dsl.bool_query(filter=[dsl.term("kind", "concept")], must_not=[dsl.term("generation", generation)])
    return {"size": size, "query": query, "_source": False}


def values_body(types: Sequence[str], max_values: int = MAX_VALUES) -> dict[str, Any]:
    """The terms aggregation that reads every raw value of each latent type with its chunk count."""
    aggs = {t: {"terms": {"field": LATENT_PREFIX + t, "size": max_values}} for t in types}
    return {"size": 0, "query": dsl.match_all(), "aggs": aggs}


def count_body(etype: str, forms: Sequence[str]) -> dict[str, Any]:
    """Chunks holding any form of one concept (exact, however many forms a chunk holds)."""
    return {"size": 0, "track_total_hits": True, "query": dsl.bool_query(filter=[dsl.terms(LATENT_PREFIX + etype,
                                                                                           list(forms))])}


def latent_types(backend: SearchBackend, index: str) -> list[str]:
    if not backend.index_exists(index):
        raise ValueError(f"index `{index}` does not exist; create it with `latentsearch ingest PATH --index {index}`")
    schema = schema_from_mapping(backend.get_mapping(index))
    if schema is None or not schema.latent_types:
        raise ValueError(f"index `{index}` has no latent types, so it has no value vocabulary; ingest with "
                         "--latent-types (e.g. --latent-types disease,anatomy)")
    return schema.type_names


def index_values(backend: SearchBackend, index: str, types: Sequence[str] | None = None,
                 max_values: int = MAX_VALUES) -> dict[str, dict[str, int]]:
    """Latent type -> raw value -> chunks holding it, read by one terms aggregation."""
    types = list(types) if types is not None else latent_types(backend, index)
    if not types:
        return {}
    aggs = backend.search(index, values_body(types, max_values)).get("aggregations", {})
    out: dict[str, dict[str, int]] = {}
    for t in types:
        agg = aggs.get(t, {})
        if int(agg.get("sum_other_doc_count", 0) or 0):
            log.warning("latent.%s has more than %d distinct values in `%s`; the vocabulary holds the %d most "
                        "frequent", t, max_values, index, max_values)
        out[t] = {str(b["key"]): int(b["doc_count"]) for b in agg.get("buckets", [])}
    return out


def refresh_counts(backend: SearchBackend, index: str, vocab: Vocabulary,
                   values: Mapping[str, Mapping[str, int]] | None = None) -> Vocabulary:
    """Exact counts: one-form concepts from the aggregation, concepts with several stored forms by one
    count each (batched in msearch), since a chunk may hold two forms of one concept."""
    values = values if values is not None else index_values(backend, index, vocab.types)
    multi: list[Concept] = []
    for etype, concepts in vocab.concepts.items():
        held = values.get(etype, {})
        for c in concepts:
            present = [f for f in c.aliases if f in held]
            c.count = held[present[0]] if len(present) == 1 else 0
            if len(present) > 1:
                multi.append(c)
    for i in range(0, len(multi), 200):
        batch = multi[i : i + 200]
        responses = backend.msearch(index, [count_body(c.type, c.aliases) for c in batch])
        for c, r in zip(batch, responses):
            c.count = int(r["hits"]["total"]["value"])
    return vocab


def load_vocabulary(backend: SearchBackend, index: str) -> Vocabulary | None:
    """The stored vocabulary of `index`, or None when it has none yet."""
    side = vocab_index(index)
    if not backend.index_exists(side):
        return None
    hits = backend.search(side, header_body())["hits"]["hits"]
    if not hits:
        return None
    head = hits[0]["_source"]
    generation, total = int(head["generation"]), int(head["concepts"])
    docs: list[dict[str, Any]] = []
    for start in range(0, total, PAGE):
        docs += [h["_source"] for h in backend.search(side, page_body(generation, start))["hits"]["hits"]]
    if len(docs) != total:
        raise ValueError(f"the vocabulary of `{index}` is damaged: its header lists {total} concepts, "
                         f"{len(docs)} were found in `{side}`; rebuild it with `latentsearch vocab rebuild`")
    concepts: dict[str, list[Concept]] = {}
    for d in sorted(docs, key=lambda d: d["seq"]):
        c = Concept(type=d["type"], name=d["name"], aliases=d.get("aliases") or [], count=d.get("count", 0),
                    user_edited=bool(d.get("user_edited")), dropped=bool(d.get("dropped")))
        concepts.setdefault(c.type, []).append(c)
    return Vocabulary(index=index, concepts=concepts, threshold=head["threshold"], model=head.get("model"),
                      version=int(head["version"]), updated_at=head.get("updated_at"), format=head.get("format", FORMAT))


def save_vocabulary(backend: SearchBackend, index: str, vocab: Vocabulary) -> Vocabulary:
    """Store `vocab` as the vocabulary of `index` (version + 1). Returns what was stored."""
    side = vocab_index(index)
    backend.create_index(side, vocab_index_body(), exist_ok=True)
    stored = vocab.model_copy(update={"index": index, "version": vocab.version + 1,
                                      "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, deep=True)
    stored.reindex()
    generation = time.time_ns()
    flat = [c for cs in stored.concepts.values() for c in cs]
    actions = [
        BulkAction(id=_concept_id(generation, seq), source={
            "kind": "concept", "generation": generation, "seq": seq, "type": c.type, "name": c.name,
            "aliases": c.aliases, "count": c.count, "user_edited": c.user_edited, "dropped": c.dropped})
        for seq, c in enumerate(flat)
    ]
    for i in range(0, len(actions), 1000):
        _check(backend.bulk(side, actions[i : i + 1000]), side)
    header = {"kind": "header", "generation": generation, "index": index, "threshold": stored.threshold,
              "model": stored.model, "version": stored.version, "updated_at": stored.updated_at,
              "concepts": len(flat), "format": FORMAT}
    _check(backend.bulk(side, [BulkAction(id=HEADER_ID, source=header)], refresh=True), side)
    while True:  # the previous generations, now unreferenced
        stale = [h["_id"] for h in backend.search(side, stale_body(generation))["hits"]["hits"]]
        if not stale:
            break
        _check(backend.bulk(side, [BulkAction(id=s, op="delete") for s in stale], refresh=True), side)
    return stored


def delete_vocabulary(backend: SearchBackend, index: str) -> bool:
    """Drop the sidecar (with its index: `latentsearch delete-index` calls this). Whether one existed."""
    try:
        side = vocab_index(index)
    except ValueError:  # a name no sidecar can have
        return False
    return backend.delete_index(side, missing_ok=True)


def update_index_vocabulary(backend: SearchBackend, index: str, embedder, *, rebuild: bool = False,
                            threshold: float | None = None) -> Vocabulary:
    """Read the index's values, place them in its stored vocabulary (from scratch but keeping user
    edits when `rebuild`), count exactly and save. What ingest runs at its end."""
    types = latent_types(backend, index)
    values = index_values(backend, index, types)
    current = load_vocabulary(backend, index) or Vocabulary(index=index)
    start = current.user_edits() if rebuild else current
    vocab = update_vocabulary(start, values, embedder, threshold=threshold)
    refresh_counts(backend, index, vocab, values)
    return save_vocabulary(backend, index, vocab)


def _concept_id(generation: int, seq: int) -> str:
    return hashlib.sha1(f"{generation}:{seq}".encode()).hexdigest()[:20]


def _check(results: Sequence[Any], side: str) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise ValueError(f"writing the vocabulary to `{side}` failed for {len(bad)} document(s), e.g. "
                         f"{bad[0].error_type}: {bad[0].error}")
