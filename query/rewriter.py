"""The query rewriter: a question -> a k-NN query whose `filter` asks for the latent entities the
question implies, with a strictness (`minimum_should_match`) chosen per query.

    rewriter = QueryRewriter(backend, "papers", get_embedder(), get_extractor())
    found = rewriter.search("Which drugs lower the risk of heart attack?", strictness="auto")
    found.hits, found.explanation.chosen_msm, found.explanation.dsl

Steps: embed the question; extract its latent entities per schema type with the same extractor
that enriched the documents; map each entity onto the values the index actually holds (exact,
normalised, then embedding-nearest: generated strings vary in wording); one `should` clause per
entity. The strictness ladder msm = n, n-1, ..., 1, no filter runs as **one** `_msearch`; `auto`
keeps the strictest level that still has `min_hits` documents scoring above a floor taken from the
unfiltered ranking (the LentEx paper lost recall to over-strict filters: this is the guard).
The filter always sits inside `knn.filter` (efficient filtering), never as a post-filter. Hits of
the chosen level get a small score boost (`promotion="boost"`, the default) or come first when at
or above the floor (`promotion="tier"`); the unfiltered ranking fills the rest (`backfill`),
so a filter reorders the head of the list without ever shrinking it. With a small extractor the
entities are noisy, and on SciFact the soft boost is what does not lose (benchmarks/strictness.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from latentsearch import dsl
from latentsearch.backends import SearchBackend
from latentsearch.cache import content_hash
from latentsearch.config import EntitySchema
from latentsearch.ingest.vocabulary import load_vocabulary, normalise
from latentsearch.mappings import schema_from_mapping
from latentsearch.query.policy import LatentPolicy, load_policy
from latentsearch.query.search import RRF_RANK_CONSTANT, Fusion, Hit, build_body, collapse_hits, parse_hits

Strictness = Literal["auto", "strict", "loose", "none"] | int | str
_UNSET = object()
LATENT_PREFIX = "latent."
_PERCENT = re.compile(r"^-?\d{1,3}%$")


class RewriteOptions(BaseModel):
    """How strict the latent filter is and how entities are mapped. Defaults suit top-10 search."""

    k: int = Field(10, ge=1, le=10_000, description="Documents to return")
    mode: Literal["dense", "hybrid"] = "dense"
    strictness: Strictness = Field(
        "auto",
        description="auto (strictest level with min_hits good documents), strict (all entities), loose (any one), "
        "none (no filter), an int (that many entities), or a percent such as '60%'",
    )
    min_hits: int = Field(5, ge=1, description="auto: documents a level must keep above the score floor")
    floor_rank: int = Field(
        20, ge=1, description="auto: the floor is the unfiltered ranking's score at this rank (unless score_floor)"
    )
    score_floor: float | None = Field(None, description="auto: an absolute score floor instead of floor_rank")
    backfill: bool = Field(
        True, description="Filtered hits at or above the floor first, then the unfiltered ranking (False: filtered only)"
    )
    promotion: Literal["tier", "boost", "rrf"] = Field(
        "boost",
        description="How filtered documents move up: `boost` adds `boost` to their k-NN score and re-sorts the "
        "unfiltered list (hybrid: the same boost in fused-score units; a soft preference that survives noisy "
        "entities); `tier` puts those at or above the floor first; `rrf` fuses the unfiltered lists (k-NN, and "
        "BM25 in hybrid) with the filtered k-NN list by reciprocal rank, the filtered list weighted `latent_weight`",
    )
    boost: float = Field(0.01, ge=0, description="Score added to filtered documents with promotion=boost")
    latent_weight: float = Field(0.5, ge=0, description="promotion=rrf: weight of the filtered list (others 1)")
    rrf_depth: int = Field(100, ge=1, le=1000, description="promotion=rrf: documents per fused list")
    types: list[str] | None = Field(None, description="Latent types to use (default: every type of the index)")
    fusion: Fusion | None = Field(None, description="hybrid: how BM25 and k-NN scores are fused "
                                  "(default: query.search.DEFAULT_FUSION)")
    weights: tuple[float, float] | None = Field(None, description="hybrid min_max: (BM25, k-NN) weights "
                                                "(default: query.search.DEFAULT_WEIGHTS)")
    entities: Literal["free", "chosen"] = Field(
        "free", description="How the question's entities are found: `free` = the extractor names them and they are "
        "mapped onto index values; `chosen` = the extractor scores candidate index values (the nearest to the "
        "question by embedding) and keeps those above `min_confidence`: it cannot invent a value")
    candidates: int = Field(12, ge=1, le=200, description="chosen: candidate index values scored per type")
    hints: int = Field(200, ge=0, le=5000, description="free: the index values nearest the question given to the "
                       "extractor as draft answers (speculative decoding: fewer passes, the same values; 0 = off)")
    min_confidence: float = Field(0.3, ge=0, le=1, description="chosen: a value below this confidence (softmax over "
                                  "the candidates' log-likelihoods) gives no clause")
    values_per_type: int = Field(1, ge=1, le=10, description="chosen: values kept per type")
    map_top_n: int = Field(3, ge=0, description="Embedding-nearest vocabulary values added per entity")
    map_min_similarity: float = Field(0.75, ge=-1, le=1, description="Cosine needed for a nearest value")
    filter: dict[str, Any] | None = Field(None, description="A user filter clause, always applied")
    include_dsl: bool = Field(False, description="Return the final request body, vectors included, as `dsl`")

    @field_validator("strictness", mode="before")
    @classmethod
    def _check_strictness(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("strictness must be auto, strict, loose, none, an int or a percent")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("an integer strictness counts entities and must be >= 1 (use 'none' for no filter)")
            return value
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("auto", "strict", "loose", "none"):
                return v
            if v.lstrip("-").isdigit():
                return cls._check_strictness(int(v))
            if _PERCENT.match(v) and abs(int(v[:-1])) <= 100:
                return v
        raise ValueError(f"strictness {value!r}: use auto, strict, loose, none, an int (e.g. 2) or a percent (e.g. 60%)")


class EntityMapping(BaseModel):
    """One entity the question implies, and the index values it was mapped to."""

    type: str
    extracted: str
    values: list[str] = Field(description="Values of latent.<type> the clause matches")
    how: dict[str, str] = Field(default_factory=dict, description="value -> exact | normalised | nearest:<cosine>")


class LevelReport(BaseModel):
    msm: int | None = Field(description="minimum_should_match of this level; None = no latent filter")
    hits: int = Field(description="Documents returned at this level")
    above_floor: int = Field(description="Documents scoring at or above the floor")


class Explanation(BaseModel):
    """Why the results look the way they do: printed by `latentsearch search --explain`."""

    entities: list[EntityMapping] = Field(default_factory=list)
    unmapped: list[EntityMapping] = Field(default_factory=list, description="Extracted but absent from the index")
    strictness: str
    floor: float | None = None
    levels: list[LevelReport] = Field(default_factory=list)
    chosen_msm: int | None = None
    reason: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
    dsl: dict[str, Any] = Field(default_factory=dict, description="The final request body (vectors shortened)")


class RewrittenSearch(BaseModel):
    """`latentsearch search --json` on an index with latent types: SearchResult's fields plus the explanation."""

    query: str
    index: str
    mode: str
    total: int = Field(0, description="Matching chunks at the chosen level, before collapsing")
    dsl: dict[str, Any] | None = Field(None, description="The final request body (with include_dsl)")
    hits: list[Hit]
    explanation: Explanation
    took_ms: float


def latent_filter(
    mappings: Sequence[EntityMapping], msm: int | None, user_filter: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The filter for one strictness level: one `terms` clause per entity, msm of them required."""
    should = [dsl.terms(LATENT_PREFIX + m.type, m.values) for m in mappings if m.values]
    if msm is None or not should:
        return user_filter
    msm = dsl.clamp_msm(msm, len(should))
    return dsl.bool_query(should=should, minimum_should_match=msm, filter=[user_filter] if user_filter else None)


def ladder(strictness: str | int, n: int) -> list[int | None]:
    """The levels to run, strictest first; `None` is the unfiltered level (always last)."""
    if n == 0 or strictness == "none":
        return [None]
    if strictness == "auto":
        return [*range(n, 0, -1), None]
    if strictness == "strict":
        return [n, None]
    if strictness == "loose":
        return [1, None]
    return [dsl.clamp_msm(dsl.resolve_msm(strictness, n), n), None]


class Vocabulary:
    """What a question's entities can map to, per latent type, with embeddings (read once): the concepts of the
    index's stored value vocabulary (`latentsearch vocab`; dropped ones left out) where it has one, else the
    distinct raw values of `latent.<type>`. `forms` gives the stored strings a clause on a value must match."""

    def __init__(self, backend: SearchBackend, index: str, embedder, max_values: int = 20_000):
        self.backend, self.index, self.embedder, self.max_values = backend, index, embedder, max_values
        self._values: dict[str, list[str]] = {}
        self._norm: dict[str, dict[str, list[str]]] = {}
        self._forms: dict[str, dict[str, list[str]]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._row: dict[str, dict[str, int]] = {}  # type -> value -> its row in _vectors
        self._stored: Any = _UNSET

    def stored(self):
        """The index's stored concept vocabulary, or None."""
        if self._stored is _UNSET:
            self._stored = load_vocabulary(self.backend, self.index)
        return self._stored

    def load(self, types: Sequence[str]) -> None:
        missing = [t for t in types if t not in self._values]
        if not missing:
            return
        stored = self.stored()
        concepts = [t for t in missing if stored is not None and t in stored.types]
        raw = [t for t in missing if t not in concepts]
        found: dict[str, dict[str, list[str]]] = {}  # type -> value -> its forms
        for t in concepts:
            found[t] = {name: stored.terms_for(t, name) for name in stored.names(t)}
        if raw:
            aggs = {t: {"terms": {"field": LATENT_PREFIX + t, "size": self.max_values}} for t in raw}
            response = self.backend.search(self.index, {"size": 0, "query": {"match_all": {}}, "aggs": aggs})
            for t in raw:
                values = [str(b["key"]) for b in response.get("aggregations", {}).get(t, {}).get("buckets", [])]
                by_key: dict[str, list[str]] = {}
                for v in values:
                    by_key.setdefault(normalise(v), []).append(v)
                found[t] = {v: by_key[normalise(v)] for v in values}
        for t in missing:
            values = list(found[t])
            self._values[t] = values
            self._forms[t] = found[t]
            norm: dict[str, list[str]] = {}
            for v, forms in found[t].items():
                for f in dict.fromkeys([v, *forms]):
                    norm.setdefault(normalise(f), [])
                    if v not in norm[normalise(f)]:
                        norm[normalise(f)].append(v)
            self._norm[t] = norm
            self._vectors[t] = (
                np.asarray(self.embedder.encode(values), dtype=np.float32) if values else np.zeros((0, 1), np.float32)
            )
            self._row[t] = {v: i for i, v in enumerate(values)}

    def values(self, etype: str) -> list[str]:
        return self._values.get(etype, [])

    def vector(self, etype: str, value: str) -> np.ndarray | None:
        """The embedding of `value` if it is one of the loaded values of `etype`, else None."""
        row = self._row.get(etype, {}).get(value)
        return None if row is None else self._vectors[etype][row]

    def candidates(self, etype: str, vector: np.ndarray, n: int) -> list[str]:
        """The `n` values of `etype` nearest to `vector` (one per normalised form), nearest first."""
        values, vectors = self._values.get(etype, []), self._vectors.get(etype)
        if not values or vectors is None:
            return []
        out: dict[str, str] = {}
        for i in np.argsort(-(vectors @ vector)):
            out.setdefault(normalise(values[int(i)]), values[int(i)])
            if len(out) >= n:
                break
        return list(out.values())

    def forms(self, etype: str, value: str) -> list[str]:
        """The stored strings a clause on `value` (a concept name or raw value of `values`) must match."""
        return self._forms.get(etype, {}).get(value, [value])

    def map(self, etype: str, entity: str, top_n: int, min_sim: float, entity_vector: np.ndarray | None) -> dict[str, str]:
        """value -> how it matched. Exact and normalised matches first, then nearest neighbours."""
        found: dict[str, str] = {}
        values = self._values.get(etype, [])
        if entity in values:
            found[entity] = "exact"
        for v in self._norm.get(etype, {}).get(normalise(entity), []):
            found.setdefault(v, "normalised")
        vectors = self._vectors.get(etype)
        if top_n and entity_vector is not None and vectors is not None and len(values):
            sims = vectors @ entity_vector
            head = np.argsort(-sims)[: top_n + len(found)]
            nearest = [i for i in head if sims[i] >= min_sim and values[i] not in found][:top_n]
            found.update({values[i]: f"nearest:{sims[i]:.2f}" for i in nearest})
        return found


class QueryRewriter:
    """Question -> latent-entity filtered k-NN (or hybrid) search with adaptive strictness.

    `extractor=None` (or a schema without types) degrades to plain dense/hybrid search, so the
    same call works on every index."""

    def __init__(
        self,
        backend: SearchBackend,
        index: str,
        embedder,
        extractor=None,
        schema: EntitySchema | None = None,
        cache_size: int = 4096,
        store=None,
    ):
        self.backend, self.index, self.embedder, self.extractor = backend, index, embedder, extractor
        self.schema = schema if schema is not None else (schema_from_mapping(backend.get_mapping(index)) or EntitySchema())
        self.vocabulary = Vocabulary(backend, index, embedder)
        self._cache: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self._cache_size = cache_size
        self.store = store  # an ingest ContentCache: extractions survive the process (None: memory only)
        self._policy: Any = _UNSET

    # -- entities ---------------------------------------------------------------------------
    def extract(self, text: str, types: Sequence[str] | None = None,
                hints: Callable[[str], Sequence[str]] | None = None) -> dict[str, list[str]]:
        """The question's latent entities per schema type (or only `types`). Repeated questions are
        free: an in-process LRU, then the persistent store (when given), then the extractor. `hints(type)` (the
        index's values nearest the question) are draft answers: fewer decoding passes, the same values."""
        if self.extractor is None:
            return {}
        out: dict[str, list[str]] = {}
        text_type = self.schema.query_text_type or self.schema.text_type
        ns = f"query-latent:{getattr(self.extractor, 'fingerprint', type(self.extractor).__name__)}"
        missing: list[tuple[Any, str]] = []  # (type, store key) the extractor has to answer
        for etype in self.schema.latent_types:
            if types is not None and etype.name not in types:
                continue
            key = (etype.name, text)
            if key in self._cache:
                self._cache.move_to_end(key)
                out[etype.name] = self._cache[key]
                continue
            skey = content_hash(f"{text_type}\x00{etype.prompt_name}\x00{etype.options}", text)
            stored = self.store.get_many(ns, [skey]) if self.store is not None else {}
            if skey in stored:
                out[etype.name] = self._remember(key, stored[skey])
            else:
                missing.append((etype, skey))
        if missing:
            asked = [(etype.prompt_name, etype.options) for etype, _ in missing]
            if hints and _takes_hints(self.extractor):  # one drafted decode per type
                answers = [self.extractor.extract([text], text_type, name, options=opts, hints=hints(etype.name))[0]
                           for (etype, _), (name, opts) in zip(missing, asked)]
            elif hasattr(self.extractor, "extract_types"):  # every type in one call (one shared prefix pass)
                answers = [per_text[0] for per_text in self.extractor.extract_types([text], text_type, asked)]
            else:
                answers = [self.extractor.extract([text], text_type, name, options=opts)[0] for name, opts in asked]
            for (etype, _), values in zip(missing, answers):
                out[etype.name] = self._remember((etype.name, text), values)
            if self.store is not None:
                self.store.put_many(ns, {skey: values for (_, skey), values in zip(missing, answers)})
        return {etype.name: out[etype.name] for etype in self.schema.latent_types if etype.name in out}

    def _remember(self, key: tuple[str, str], values: Any) -> Any:
        """Keep `values` in the in-process LRU under `key`."""
        self._cache[key] = values
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return values

    def map_entities(self, entities: dict[str, list[str]], opts: RewriteOptions) -> tuple[list[EntityMapping], list[EntityMapping]]:
        """Entities -> index vocabulary. Returns (mapped, unmapped)."""
        self.vocabulary.load([t for t in entities if entities[t]])
        flat = [(t, e) for t, values in entities.items() for e in values]
        vectors: list[np.ndarray | None] = [None] * len(flat)
        if opts.map_top_n:  # an entity that is an index value has its vector already
            vectors = [self.vocabulary.vector(t, e) for t, e in flat]
            new = [i for i, v in enumerate(vectors) if v is None]
            for i, v in zip(new, self.embedder.encode([flat[i][1] for i in new]) if new else []):
                vectors[i] = np.asarray(v, dtype=np.float32)
        mapped, unmapped = [], []
        for (etype, entity), vec in zip(flat, vectors):
            how = self.vocabulary.map(etype, entity, opts.map_top_n, opts.map_min_similarity, vec)
            forms = list(dict.fromkeys(f for v in how for f in self.vocabulary.forms(etype, v)))
            m = EntityMapping(type=etype, extracted=entity, values=forms, how=how)
            (mapped if how else unmapped).append(m)
        return mapped, unmapped

    def choose_entities(self, text: str, vector: np.ndarray, types: Sequence[str], opts: RewriteOptions
                        ) -> tuple[list[EntityMapping], list[EntityMapping]]:
        """Question entities chosen among the index's values: per type, the values nearest to the question are
        scored by the extractor as answers (mean token log-likelihood, softmax over the candidates) and those
        with confidence >= `min_confidence` become clauses. Extractors without option scores (remote endpoints)
        pick one candidate by a constrained prompt (confidence 1)."""
        text_type = self.schema.query_text_type or self.schema.text_type
        mapped: list[EntityMapping] = []
        unmapped: list[EntityMapping] = []
        by_name = {t.name: t for t in self.schema.latent_types}
        for etype in types:
            cands = self.vocabulary.candidates(etype, vector, opts.candidates)
            if not cands:
                continue
            prompt = by_name[etype].prompt_name
            key = ("chosen:" + etype + "\x00" + "\x01".join(cands), text)
            scored = self._cache.get(key)
            if scored is None:
                if hasattr(self.extractor, "option_probabilities"):
                    probs = self.extractor.option_probabilities(text, text_type, prompt, cands)
                    scored = sorted(zip(cands, probs), key=lambda x: -x[1])
                else:
                    scored = [(self.extractor.extract([text], text_type, prompt, options=cands)[0][0], 1.0)]
                self._remember(key, scored)
            for value, conf in scored[: opts.values_per_type]:
                forms = self.vocabulary.forms(etype, value)
                m = EntityMapping(type=etype, extracted=value, values=forms,
                                  how={f: f"chosen:{conf:.2f}" for f in forms})
                (mapped if conf >= opts.min_confidence else unmapped).append(m)
        return mapped, unmapped

    # -- search -----------------------------------------------------------------------------
    def policy(self) -> LatentPolicy | None:
        """The latent policy fitted for this index (`latentsearch tune strictness`), read once; None without one."""
        if self._policy is _UNSET:
            self._policy = load_policy(self.backend, self.index)
        return self._policy  # type: ignore[return-value]

    def options(self, **options: Any) -> tuple[RewriteOptions, LatentPolicy | None]:
        """RewriteOptions for one call, and the policy they came from. `strictness="auto"` (the default) on an
        index with a fitted policy means that policy: its fields fill every option the caller did not set."""
        policy = self.policy() if str(options.get("strictness", "auto")).lower() == "auto" else None
        if policy is None:
            return RewriteOptions(**options), None
        given = {k: v for k, v in options.items() if k != "strictness"}
        return RewriteOptions(**{**policy.options(), **given}), policy

    def search(self, text: str, **options: Any) -> RewrittenSearch:
        """Search with latent filters. Keyword options are RewriteOptions fields (k, mode, strictness, ...)."""
        opts, policy = self.options(**options)
        if not text.strip():
            raise ValueError("the query text is empty")
        started = time.perf_counter()
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        vector = np.asarray(self.embedder.encode([text])[0], dtype=np.float32).tolist()
        timings["embed"] = _ms(t0)

        t0 = time.perf_counter()
        mapped: list[EntityMapping] = []
        unmapped: list[EntityMapping] = []
        if opts.strictness != "none" and self.extractor is not None and self.schema.latent_types:
            self.vocabulary.load(self.schema.type_names)
            if opts.types is not None and set(opts.types) - set(self.schema.type_names):
                raise ValueError(f"unknown latent types {sorted(set(opts.types) - set(self.schema.type_names))}; "
                                 f"this index has: {', '.join(self.schema.type_names)}")
            wanted = opts.types if opts.types is not None else self.schema.type_names
            filled = [t for t in wanted if self.vocabulary.values(t)]  # empty: no LLM call
            if opts.entities == "chosen":
                mapped, unmapped = self.choose_entities(text, np.asarray(vector, dtype=np.float32), filled, opts)
            elif filled:
                near = np.asarray(vector, dtype=np.float32)
                hints = (lambda t: self.vocabulary.candidates(t, near, opts.hints)) if opts.hints else None
                entities = self.extract(text, filled, hints)
                mapped, unmapped = self.map_entities(entities, opts) if entities else ([], [])
        timings["extract"] = _ms(t0)

        strictness = opts.strictness
        levels = ladder(strictness, len(mapped))
        depth = max(opts.k, opts.floor_rank, opts.rrf_depth if opts.promotion == "rrf" else 0)
        bodies = [
            build_body(text, mode="dense", k=depth, vector=vector, filter=latent_filter(mapped, m, opts.filter))
            for m in levels
        ]
        lexical_rrf = opts.promotion == "rrf" and opts.mode == "hybrid" and len(levels) > 1
        extra = [build_body(text, mode="bm25", k=depth, vector=None, filter=opts.filter)] if lexical_rrf else []
        t0 = time.perf_counter()
        responses = self.backend.msearch(self.index, bodies + extra)
        timings["backend"] = _ms(t0)
        if lexical_rrf:  # promotion=rrf in hybrid: BM25's list, from the same round trip
            lexical = collapse_hits(parse_hits(responses.pop()), depth)
        totals = [int(r["hits"]["total"]["value"]) for r in responses]
        ranked = [parse_hits(r) for r in responses]
        unfiltered = ranked[-1]

        floor, reports, chosen, reason = decide(levels, ranked, opts, mapped, unmapped)
        pick = levels.index(chosen)

        final_filter = latent_filter(mapped, chosen, opts.filter)
        promote = opts.backfill and chosen is not None
        # only filtered documents that compete with the unfiltered head move up; the rest keep their rank
        keep = {h.doc_id for h in ranked[pick] if floor is None or h.score >= floor}
        if promote and opts.promotion == "rrf":
            lists, weights = [unfiltered, ranked[pick]], [1.0, opts.latent_weight]
            if lexical_rrf:  # the BM25 list joins: hybrid's own RRF with one more list
                lists, weights = [lexical, *lists], [1.0, *weights]
            body = bodies[pick]
            hits = rrf_fuse(lists, weights, opts.k)
        elif opts.mode == "hybrid":
            fuse = {"fusion": opts.fusion, "weights": opts.weights}
            body = build_body(text, mode="hybrid", k=opts.k, vector=vector, filter=final_filter, **fuse)
            batch = [body]
            if promote:
                batch.append(build_body(text, mode="hybrid", k=depth, vector=vector, filter=opts.filter, **fuse))
            t0 = time.perf_counter()
            raw = self.backend.msearch(self.index, batch)
            found = [collapse_hits(parse_hits(r), n) for r, n in zip(raw, (opts.k, depth))]
            timings["backend"] += _ms(t0)
            totals[pick] = int(raw[0]["hits"]["total"]["value"])
            if promote and opts.promotion == "boost":
                # the dense boost, carried into hybrid score units by the ratio of the two lists' head spreads
                matched = {h.doc_id for h in found[0]} | {h.doc_id for h in ranked[pick]}
                hyb = found[1]
                spread_h = hyb[0].score - hyb[min(opts.floor_rank, len(hyb)) - 1].score if hyb else 0.0
                spread_d = unfiltered[0].score - floor if unfiltered and floor is not None else 0.0
                bonus = opts.boost * spread_h / spread_d if spread_d > 0 else 0.0
                hits = _boosted(hyb, matched, bonus, opts.k)
            elif promote:
                hits = _merge([h for h in found[0] if h.doc_id in keep], found[1], opts.k)
            else:
                hits = found[0]
        else:
            body = bodies[pick]
            hits = dense_ranking(ranked[pick], unfiltered, chosen, floor, opts)
        timings["total"] = _ms(started)
        if policy is not None:
            fitted = policy.fitted
            reason = (f"auto = this index's fitted policy ({policy.promotion}, strictness {policy.strictness}, "
                      f"{policy.entities} entities; fitted on {fitted.get('queries', '?')} queries, held-out nDCG@10 "
                      f"{fitted.get('held_out_ndcg@10', '?')}): {reason}")
        explanation = Explanation(
            entities=mapped, unmapped=unmapped, strictness=str(strictness), floor=floor, levels=reports,
            chosen_msm=chosen, reason=reason, timings_ms=timings, dsl=shorten_vectors(body),
        )
        return RewrittenSearch(query=text, index=self.index, mode=opts.mode, total=totals[pick], hits=hits,
                               explanation=explanation, took_ms=timings["total"],
                               dsl=body if opts.include_dsl else None)

    async def asearch(self, text: str, **options: Any) -> RewrittenSearch:
        """The async form: the work is CPU-bound model calls plus one msearch, run off the event loop."""
        return await asyncio.to_thread(self.search, text, **options)



def _takes_hints(extractor: Any) -> bool:
    """The extractor's `extract` accepts draft answers (`hints`); a user's extractor that follows the plain
    `LatentExtractor` protocol is called without them."""
    import inspect

    try:
        return "hints" in inspect.signature(extractor.extract).parameters
    except (TypeError, ValueError):
        return False


# -- the strictness decision: pure functions of the level rankings (tests/test_strictness.py) ------


def score_floor(unfiltered: Sequence[Hit], opts: RewriteOptions) -> float | None:
    """`score_floor` when given, else the unfiltered ranking's score at `floor_rank` (its last hit
    when shorter); None when there is neither (then every hit counts as above the floor)."""
    if opts.score_floor is not None:
        return opts.score_floor
    if not unfiltered:
        return None
    return unfiltered[min(opts.floor_rank, len(unfiltered)) - 1].score


def decide(
    levels: list[int | None], ranked: Sequence[Sequence[Hit]], opts: RewriteOptions,
    mapped: list[EntityMapping], unmapped: list[EntityMapping],
) -> tuple[float | None, list[LevelReport], int | None, str]:
    """(floor, one report per level, the chosen msm, why) from each level's ranking; the last
    level is the unfiltered one. No backend: the search calls this on its one msearch's results."""
    floor = score_floor(ranked[-1], opts)
    reports = [
        LevelReport(msm=m, hits=len(h), above_floor=sum(1 for x in h if floor is None or x.score >= floor))
        for m, h in zip(levels, ranked)
    ]
    chosen, reason = choose(levels, reports, opts, mapped, unmapped)
    return floor, reports, chosen, reason


def dense_ranking(
    level: Sequence[Hit], unfiltered: Sequence[Hit], chosen: int | None, floor: float | None, opts: RewriteOptions,
) -> list[Hit]:
    """The final dense list: `boost` adds opts.boost to the chosen level's documents in the unfiltered
    list; `tier` puts its hits at or above the floor first; then (backfill) the unfiltered rest.
    Without backfill, or with no filter chosen, the level's own ranking."""
    if not (opts.backfill and chosen is not None):
        return list(level[: opts.k])
    if opts.promotion == "boost":
        return _boosted(list(unfiltered), {h.doc_id for h in level}, opts.boost, opts.k)
    keep = [h for h in level if floor is None or h.score >= floor]
    return _merge(keep[: opts.k], list(unfiltered), opts.k)


def choose(
    levels: list[int | None], reports: list[LevelReport], opts: RewriteOptions,
    mapped: list[EntityMapping], unmapped: list[EntityMapping],
) -> tuple[int | None, str]:
    """The msm to use: fixed strictness takes the ladder's first level; `auto` the strictest with
    at least `min_hits` documents at or above the floor, else no filter."""
    if not mapped:
        why = "no latent entities extracted" if not unmapped else "no extracted entity exists in the index"
        return None, why + "; unfiltered"
    if opts.strictness != "auto":
        msm = levels[0]
        return msm, f"strictness {opts.strictness}: {msm} of {len(mapped)} entities required"
    for msm, rep in zip(levels, reports):
        if msm is not None and rep.above_floor >= opts.min_hits:
            return msm, (
                f"strictest level with >= {opts.min_hits} documents above the floor: "
                f"{msm} of {len(mapped)} entities ({rep.above_floor} documents)"
            )
    return None, f"no level kept {opts.min_hits} documents above the floor; unfiltered"


def rrf_fuse(lists: Sequence[Sequence[Hit]], weights: Sequence[float], k: int,
             rank_constant: int = RRF_RANK_CONSTANT) -> list[Hit]:
    """Weighted reciprocal rank fusion of ranked hit lists (one hit per document each): a document scores
    sum(weight / (rank_constant + rank)), rank from 1, as OpenSearch's RRF does with weights."""
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, weight in zip(lists, weights):
        for rank, h in enumerate(hits, 1):
            fused[h.doc_id] = fused.get(h.doc_id, 0.0) + weight / (rank_constant + rank)
            first.setdefault(h.doc_id, h)
    order = sorted(fused, key=lambda d: -fused[d])[:k]
    return [first[d].model_copy(update={"score": round(fused[d], 6)}) for d in order]


def _boosted(hits: list[Hit], matched: set[str], bonus: float, k: int) -> list[Hit]:
    """The list re-sorted with `bonus` added to the score of documents that passed the filter."""
    scored = [h.model_copy(update={"score": h.score + bonus}) if h.doc_id in matched else h for h in hits]
    return sorted(scored, key=lambda h: -h.score)[:k]


def _merge(first: list[Hit], rest: list[Hit], k: int) -> list[Hit]:
    seen = {h.doc_id for h in first}
    return (first + [h for h in rest if h.doc_id not in seen])[:k]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def shorten_vectors(body: Any) -> Any:
    """The DSL for display and explanations: a `vector` becomes "[d floats]"."""
    if isinstance(body, dict):
        return {
            k: (f"[{len(v)} floats]" if k == "vector" and isinstance(v, list) else shorten_vectors(v))
            for k, v in body.items()
        }
    if isinstance(body, list):
        return [shorten_vectors(v) for v in body]
    return body

