"""Seeded, deterministic generators of documents and OpenSearch DSL queries for differential tests.

The same documents and queries are sent to osmem-server (an independent in-memory
OpenSearch-compatible server, oracle 3 in the architecture notes) and to the embedded engine;
the hit id sets must agree. Nothing here imports latentsearch: the oracle side stays independent of
the code under test.

Design choices that keep the comparison about *semantics*, not about representation noise:

* keyword values come from small vocabularies so clauses overlap and `minimum_should_match`
  thresholds actually separate documents; one organism value has upper case and a space
  (`Homo sapiens`) and one differs from another only by case (`Rat` vs the query value `rat`)
  so exact keyword matching is exercised;
* some documents miss a field entirely, some carry an empty array, a few carry an empty string
  in `text` (OpenSearch: `[]`/missing/null do not "exist", `""` does);
* the float field only holds multiples of 0.25 and range bounds come from the same grid: these
  are exact in float32 (OpenSearch's `float`) and float64 alike, so boundary tests (gte vs gt)
  are meaningful without float32 rounding artefacts;
* text is lowercase words separated by spaces (standard-analyzer-friendly). The word list
  deliberately contains English stop words (`the`, `and`, `of`, `with`, `in`) and singular /
  plural pairs (`cell`/`cells`, `gene`/`genes`, `mouse`/`mice`): OpenSearch's `standard`
  analyzer neither removes stop words nor stems, so `match: the` must find documents with "the"
  and `match: cell` must not find documents that only say "cells".
"""

from __future__ import annotations

import json
import random
from typing import Any

INDEX = "diff_docs"
SEED_DOCS = 20240611
SEED_QUERIES = 777
N_DOCS = 240
N_QUERIES = 160
SIZE = 1000  # larger than N_DOCS: every hit comes back

DISEASES = ["asthma", "diabetes", "flu", "covid", "malaria", "anemia"]
CHEMICALS = ["aspirin", "insulin", "caffeine", "ethanol", "heparin"]
ORGANISMS = ["human", "mouse", "Rat", "Homo sapiens", "yeast"]
LATENT_VOCAB: dict[str, list[str]] = {"disease": DISEASES, "chemical": CHEMICALS, "organism": ORGANISMS}
# values that occur in no document (a term on them must match nothing)
ABSENT_VALUES = {"disease": "cholera", "chemical": "benzene", "organism": "rat"}

WORDS = [
    "the", "and", "of", "with", "in",
    "cell", "cells", "gene", "genes", "mouse", "mice",
    "protein", "tumor", "growth", "signal", "pathway", "blood", "liver",
    "brain", "drug", "dose", "response", "immune", "virus", "receptor",
]  # fmt: skip
TITLES = [
    "Cell growth in mice",
    "Gene expression",
    "Tumor response to drug dose",
    "Immune signal pathway",
    "Liver and brain",
    "Blood cells",
    "Virus receptor binding",
    "Protein genes",
]
MENTION_TYPES = ["disease", "chemical", "organism"]
MENTION_TEXTS = ["flu", "asthma", "insulin", "aspirin", "mouse", "human", "covid"]

DIMENSION = 4
MENTION_DIMENSION = 3


def _knn(dimension: int) -> dict[str, Any]:
    return {
        "type": "knn_vector",
        "dimension": dimension,
        "method": {
            "name": "hnsw",
            "space_type": "cosinesimil",
            "engine": "faiss",
            "parameters": {"m": 16, "ef_construction": 100},
        },
    }


# Resembles latentsearch's own index body (mappings/builder.py); written out by hand so the
# oracle does not depend on project code. osmem accepts knn_vector mappings (it has no knn query).
INDEX_BODY: dict[str, Any] = {
    "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0, "knn": True}},
    "mappings": {
        "dynamic": "true",
        "properties": {
            "doc_id": {"type": "keyword"},
            "chunk": {"properties": {"no": {"type": "integer"}}},
            "quality": {"type": "float"},
            "reviewed": {"type": "boolean"},
            "title": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "text": {"type": "text"},
            "vector": _knn(DIMENSION),
            "latent": {
                "properties": {
                    "disease": {"type": "keyword"},
                    "chemical": {"type": "keyword"},
                    "organism": {"type": "keyword"},
                }
            },
            "mentions": {
                "type": "nested",
                "properties": {
                    "text": {"type": "keyword"},
                    "start": {"type": "integer"},
                    "end": {"type": "integer"},
                    "type": {"type": "keyword"},
                    "vector": _knn(MENTION_DIMENSION),
                },
            },
        },
    },
}

INT_FIELD = "chunk.no"
INT_RANGE = (0, 40)
FLOAT_FIELD = "quality"
FLOAT_GRID = [i * 0.25 for i in range(41)]  # 0.0 .. 10.0, exact in float32
BOOL_FIELD = "reviewed"
EXISTS_FIELDS = [
    "latent.disease", "latent.chemical", "latent.organism", INT_FIELD, FLOAT_FIELD, BOOL_FIELD,
    "text", "title", "title.keyword", "doc_id",
]  # fmt: skip


# ----------------------------------------------------------------------------------- documents
def _vec(rng: random.Random, dim: int) -> list[float]:
    return [round(rng.uniform(-1, 1), 4) for _ in range(dim)]


def generate_documents(n: int = N_DOCS, seed: int = SEED_DOCS) -> list[dict[str, Any]]:
    """`n` documents; `doc_id` is also the `_id`. Deterministic for a given seed."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    for i in range(n):
        doc: dict[str, Any] = {"doc_id": f"d{i:03d}", "vector": _vec(rng, DIMENSION)}
        latent: dict[str, Any] = {}
        for field, vocab in LATENT_VOCAB.items():
            r = rng.random()
            if r < 0.15:
                continue  # field missing
            if r < 0.25:
                latent[field] = []  # empty array
                continue
            latent[field] = rng.sample(vocab, rng.randint(1, 4))
        if latent or rng.random() < 0.5:
            doc["latent"] = latent  # sometimes `latent: {}`, sometimes no `latent` at all
        if rng.random() < 0.9:
            doc["chunk"] = {"no": rng.randint(*INT_RANGE)}
        if rng.random() < 0.85:
            doc[FLOAT_FIELD] = rng.choice(FLOAT_GRID)
        r = rng.random()
        if r < 0.45:
            doc[BOOL_FIELD] = True
        elif r < 0.85:
            doc[BOOL_FIELD] = False
        r = rng.random()
        if r < 0.05:
            doc["text"] = ""  # exists, but has no tokens
        elif r < 0.92:
            doc["text"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        if rng.random() < 0.85:
            doc["title"] = rng.choice(TITLES)
        r = rng.random()
        if r < 0.1:
            pass  # no mentions field
        elif r < 0.2:
            doc["mentions"] = []
        else:
            mentions = []
            for _ in range(rng.randint(0, 3)):
                start = rng.randint(0, 120)
                text = rng.choice(MENTION_TEXTS)
                mentions.append(
                    {
                        "text": text,
                        "start": start,
                        "end": start + len(text),
                        "type": rng.choice(MENTION_TYPES),
                        "vector": _vec(rng, MENTION_DIMENSION),
                    }
                )
            doc["mentions"] = mentions
        docs.append(doc)
    return docs


# ------------------------------------------------------------------------------------- queries
# Every minimum_should_match form OpenSearch accepts, cycled round-robin so each form is used.
MSM_FORMS = [
    "int", "int_str", "neg_int", "neg_int_str", "percent", "neg_percent",
    "3<90%", "2<-25% 9<-3", "1<-1", "2<50%", "zero", "zero_str", "above", "equal", "big_neg",
]  # fmt: skip


def msm_value(form: str, n: int, rng: random.Random) -> int | str:
    """A minimum_should_match value of the given form for a bool with `n` should clauses."""
    if form == "int":
        return rng.randint(1, max(1, min(n, 3)))
    if form == "int_str":
        return str(rng.randint(1, max(1, min(n, 3))))
    if form == "neg_int":
        return -rng.randint(1, max(1, n - 1))
    if form == "neg_int_str":
        return str(-rng.randint(1, max(1, n - 1)))
    if form == "percent":
        return f"{rng.choice([10, 25, 33, 50, 66, 75, 90, 100])}%"
    if form == "neg_percent":
        return f"-{rng.choice([10, 25, 34, 50, 75, 100])}%"
    if form == "zero":
        return 0
    if form == "zero_str":
        return "0"
    if form == "above":
        return n + rng.randint(1, 2)
    if form == "equal":
        return n
    if form == "big_neg":
        return -(n + 1)  # rounds to 0: no constraint beyond OpenSearch's defaults
    return form  # the conditional specs are used verbatim


class QueryGenerator:
    """Random bool trees over the document fields; deterministic for a given seed."""

    def __init__(self, docs: list[dict[str, Any]], seed: int = SEED_QUERIES):
        self.rng = random.Random(seed)
        self.doc_ids = [d["doc_id"] for d in docs]
        self._msm_i = 0

    # -- leaves ---------------------------------------------------------------------------
    def next_msm_form(self) -> str:
        form = MSM_FORMS[self._msm_i % len(MSM_FORMS)]
        self._msm_i += 1
        return form

    def latent_value(self, field: str) -> str:
        if self.rng.random() < 0.06:
            return ABSENT_VALUES[field]
        return self.rng.choice(LATENT_VOCAB[field])

    def term_latent(self) -> dict[str, Any]:
        field = self.rng.choice(list(LATENT_VOCAB))
        value = self.latent_value(field)
        if self.rng.random() < 0.15:
            return {"term": {f"latent.{field}": {"value": value}}}
        if self.rng.random() < 0.05:
            return {"term": {f"latent.{field}": {"value": value, "boost": 2.0}}}
        return {"term": {f"latent.{field}": value}}

    def terms_latent(self) -> dict[str, Any]:
        field = self.rng.choice(list(LATENT_VOCAB))
        values = sorted({self.latent_value(field) for _ in range(self.rng.randint(1, 3))})
        return {"terms": {f"latent.{field}": values}}

    def term_int(self) -> dict[str, Any]:
        return {"term": {INT_FIELD: self.rng.randint(*INT_RANGE)}}

    def term_bool(self) -> dict[str, Any]:
        return {"term": {BOOL_FIELD: self.rng.random() < 0.5}}

    def range_num(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.5:
            field, lo, hi = INT_FIELD, rng.randint(*INT_RANGE), rng.randint(*INT_RANGE)
        else:
            field, lo, hi = FLOAT_FIELD, rng.choice(FLOAT_GRID), rng.choice(FLOAT_GRID)
        lo, hi = min(lo, hi), max(lo, hi)
        shape = rng.choice(["lower", "upper", "both", "both"])
        spec: dict[str, Any] = {}
        if shape in ("lower", "both"):
            spec[rng.choice(["gt", "gte"])] = lo
        if shape in ("upper", "both"):
            spec[rng.choice(["lt", "lte"])] = hi
        return {"range": {field: spec}}

    def exists(self) -> dict[str, Any]:
        return {"exists": {"field": self.rng.choice(EXISTS_FIELDS)}}

    def words(self, k: int) -> str:
        return " ".join(self.rng.sample(WORDS, k))

    def match(self) -> dict[str, Any]:
        rng = self.rng
        field = "text" if rng.random() < 0.8 else "title"
        k = rng.randint(1, 3)
        q = self.words(k) if field == "text" else " ".join(rng.choice(TITLES).lower().split()[:k])
        r = rng.random()
        if r < 0.3:
            return {"match": {field: q}}
        if r < 0.55:
            return {"match": {field: {"query": q, "operator": "and"}}}
        if r < 0.7:
            return {"match": {field: {"query": q, "operator": "or"}}}
        form = rng.choice(["int", "neg_int", "percent", "neg_percent", "2<50%", "3<90%"])
        n_terms = len(q.split())
        return {"match": {field: {"query": q, "minimum_should_match": msm_value(form, n_terms, rng)}}}

    def multi_match(self) -> dict[str, Any]:
        rng = self.rng
        words = rng.sample(WORDS + ["expression", "binding", "to"], rng.randint(1, 3))
        body: dict[str, Any] = {"query": " ".join(words), "fields": ["title", "text"], "type": "best_fields"}
        r = rng.random()
        if r < 0.35:
            body["operator"] = "and"
        elif r < 0.5 and len(words) > 1:
            body["minimum_should_match"] = msm_value(rng.choice(["int", "neg_int", "percent"]), len(words), rng)
        if rng.random() < 0.25:
            body["fields"] = ["title^2", "text"]
        return {"multi_match": body}

    def title_keyword(self) -> dict[str, Any]:
        title = self.rng.choice(TITLES)
        if self.rng.random() < 0.2:
            title = title.lower()  # keyword is exact: lowercased title matches nothing
        return {"term": {"title.keyword": title}}

    def ids(self) -> dict[str, Any]:
        values = self.rng.sample(self.doc_ids, self.rng.randint(1, 12))
        if self.rng.random() < 0.3:
            values.append("no-such-id")
        return {"ids": {"values": values}}

    def match_all(self) -> dict[str, Any]:
        return {"match_all": {}}

    # -- nested ----------------------------------------------------------------------------
    def mention_leaf(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return {"term": {"mentions.text": rng.choice(MENTION_TEXTS)}}
        if r < 0.6:
            return {"term": {"mentions.type": rng.choice(MENTION_TYPES)}}
        if r < 0.72:
            return {"terms": {"mentions.text": rng.sample(MENTION_TEXTS, rng.randint(1, 3))}}
        if r < 0.92:
            lo = rng.randint(0, 120)
            return {"range": {"mentions.start": {rng.choice(["gt", "gte", "lt", "lte"]): lo}}}
        return {"exists": {"field": "mentions.start"}}

    def nested(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            inner = self.mention_leaf()
        else:
            inner_bool: dict[str, Any] = {}
            shape = rng.choice(["must", "filter_should", "must_not", "should_msm"])
            if shape == "must":  # conditions on one mention: its text and its type / position
                inner_bool["must"] = [
                    {"terms": {"mentions.text": rng.sample(MENTION_TEXTS, rng.randint(1, 3))}},
                    rng.choice(
                        [
                            {"term": {"mentions.type": rng.choice(MENTION_TYPES)}},
                            {"range": {"mentions.start": {rng.choice(["gte", "lt"]): rng.randint(10, 110)}}},
                        ]
                    ),
                ]
            elif shape == "filter_should":
                inner_bool["filter"] = [self.mention_leaf()]
                inner_bool["should"] = [self.mention_leaf() for _ in range(rng.randint(1, 3))]
                if rng.random() < 0.5:
                    inner_bool["minimum_should_match"] = 1
            elif shape == "must_not":
                inner_bool["must"] = [self.mention_leaf()]
                inner_bool["must_not"] = [self.mention_leaf()]
            else:
                n = rng.randint(2, 4)
                inner_bool["should"] = [self.mention_leaf() for _ in range(n)]
                inner_bool["minimum_should_match"] = msm_value(self.next_msm_form(), n, rng)
            inner = {"bool": inner_bool}
        return {"nested": {"path": "mentions", "query": inner}}

    # -- composition -----------------------------------------------------------------------
    LEAF_KINDS = [
        "term_latent", "term_latent", "terms_latent", "terms_latent", "term_int", "term_bool",
        "range_num", "range_num", "exists", "exists", "match", "match", "multi_match",
        "title_keyword", "ids", "match_all", "nested",
    ]  # fmt: skip

    NEG_KINDS = [k for k in LEAF_KINDS if k != "match_all"]  # must_not match_all empties everything

    def leaf(self, kinds: list[str] | None = None) -> dict[str, Any]:
        return getattr(self, self.rng.choice(kinds or self.LEAF_KINDS))()

    def should_clauses(self, n: int) -> list[dict[str, Any]]:
        """Overlapping should clauses: mostly latent terms (so counts spread), some other leaves."""
        kinds = ["term_latent"] * 5 + ["terms_latent", "term_bool", "range_num", "exists", "match", "nested"]
        return [self.leaf(kinds) for _ in range(n)]

    # leaves broad enough to AND together without emptying the result (must / filter)
    CONJ_KINDS = [
        "terms_latent", "terms_latent", "term_latent", "term_bool", "range_num", "exists", "exists",
        "match", "multi_match", "nested", "match_all",
    ]  # fmt: skip

    def clause(self, depth: int, role: str = "conj") -> dict[str, Any]:
        """A must/filter (`conj`) or must_not (`neg`) clause; sometimes a sub-bool."""
        if depth > 0 and self.rng.random() < 0.3:
            shape = self.rng.choice(["pure_should", "filter_should", "pure_must_not", "must_not_should"])
            return self.bool_query(depth - 1, shape=shape)
        return self.leaf(self.CONJ_KINDS if role == "conj" else self.NEG_KINDS)

    def bool_query(self, depth: int = 1, shape: str | None = None) -> dict[str, Any]:
        rng = self.rng
        shape = shape or rng.choice(BOOL_SHAPES)
        b: dict[str, Any] = {}
        n_should = rng.choice([1, 2, 3, 3, 4, 4, 5, 6, 10, 11])
        if shape == "pure_should":
            b["should"] = self.should_clauses(n_should)
            if rng.random() < 0.85:
                b["minimum_should_match"] = msm_value(self.next_msm_form(), n_should, rng)
        elif shape == "must_should":
            b["must"] = [self.clause(depth) for _ in range(rng.randint(1, 2))]
            b["should"] = self.should_clauses(n_should)
            if rng.random() < 0.7:
                b["minimum_should_match"] = msm_value(self.next_msm_form(), n_should, rng)
        elif shape == "filter_should":
            b["filter"] = [self.clause(depth) for _ in range(rng.randint(1, 2))]
            b["should"] = self.should_clauses(n_should)
            if rng.random() < 0.5:
                b["minimum_should_match"] = msm_value(self.next_msm_form(), n_should, rng)
        elif shape == "must_not_should":
            b["must_not"] = [self.clause(depth, "neg") for _ in range(rng.randint(1, 2))]
            b["should"] = self.should_clauses(n_should)
            if rng.random() < 0.5:
                b["minimum_should_match"] = msm_value(self.next_msm_form(), n_should, rng)
        elif shape == "pure_must_not":
            b["must_not"] = [self.clause(depth, "neg") for _ in range(rng.randint(1, 3))]
        elif shape == "must_filter_must_not":
            b["must"] = [self.clause(depth) for _ in range(rng.randint(1, 2))]
            b["filter"] = [self.clause(depth) for _ in range(rng.randint(1, 2))]
            b["must_not"] = [self.clause(depth, "neg")]
        elif shape == "filter_nested_bool":
            # a should-only bool in filter context: still needs >= 1 should (or its msm)
            inner: dict[str, Any] = {"should": self.should_clauses(min(n_should, 6))}
            if rng.random() < 0.5:
                inner["minimum_should_match"] = msm_value(self.next_msm_form(), len(inner["should"]), rng)
            b["filter"] = [{"bool": inner}]
            if rng.random() < 0.5:
                b["must"] = [self.leaf(self.CONJ_KINDS)]
        elif shape == "all_four":
            b["must"] = [self.clause(depth)]
            b["filter"] = [self.clause(depth)]
            b["must_not"] = [self.clause(depth, "neg")]
            b["should"] = self.should_clauses(n_should)
            if rng.random() < 0.7:
                b["minimum_should_match"] = msm_value(self.next_msm_form(), n_should, rng)
        elif shape == "nested_in_bool":
            b["filter"] = [self.nested()]
            b["should"] = [self.nested() for _ in range(rng.randint(1, 2))] + [self.term_latent()]
            b["minimum_should_match"] = msm_value(self.next_msm_form(), len(b["should"]), rng)
        else:  # pragma: no cover
            raise ValueError(shape)
        return {"bool": b}

    def queries(self, n: int = N_QUERIES) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        leaf_kinds = sorted(set(self.LEAF_KINDS))
        for i in range(n):
            if i % 5 == 4:
                kind = leaf_kinds[(i // 5) % len(leaf_kinds)]
                q = getattr(self, kind)()
                name = f"g{i:03d}-{kind}"
            else:
                shape = BOOL_SHAPES[i % len(BOOL_SHAPES)]
                q = self.bool_query(depth=1 if i % 3 else 2, shape=shape)
                name = f"g{i:03d}-{shape}"
            out.append((name, q))
        return out


BOOL_SHAPES = [
    "pure_should", "must_should", "filter_should", "must_not_should", "pure_must_not",
    "must_filter_must_not", "filter_nested_bool", "all_four", "nested_in_bool",
]  # fmt: skip


def generate_queries(docs: list[dict[str, Any]], n: int = N_QUERIES, seed: int = SEED_QUERIES):
    return QueryGenerator(docs, seed).queries(n)


# ------------------------------------------------------------------- hand-written edge cases
def _latent_should(field: str, values: list[str], msm: Any = None, **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"should": [{"term": {f"latent.{field}": v}} for v in values], **extra}
    if msm is not None:
        b["minimum_should_match"] = msm
    return {"bool": b}


EDGE_CASES: list[tuple[str, dict[str, Any]]] = [
    # minimum_should_match, every form, on 4/5/10 overlapping latent terms
    ("msm-int-2", _latent_should("disease", DISEASES[:4], 2)),
    ("msm-int-above-count", _latent_should("disease", DISEASES[:4], 5)),
    ("msm-int-equal-count", _latent_should("disease", DISEASES[:4], 4)),
    ("msm-neg-1", _latent_should("disease", DISEASES[:4], -1)),
    ("msm-neg-1-str", _latent_should("disease", DISEASES[:4], "-1")),
    ("msm-neg-beyond", _latent_should("disease", DISEASES[:4], -7)),
    ("msm-75pct-of-4", _latent_should("disease", DISEASES[:4], "75%")),
    ("msm-75pct-of-5", _latent_should("disease", DISEASES[:5], "75%")),
    ("msm-neg-25pct-of-5", _latent_should("disease", DISEASES[:5], "-25%")),
    ("msm-neg-25pct-of-3", _latent_should("disease", DISEASES[:3], "-25%")),
    ("msm-neg-34pct-of-2", _latent_should("disease", DISEASES[:2], "-34%")),
    ("msm-2<-25%_9<-3-of-3", _latent_should("disease", DISEASES[:3], "2<-25% 9<-3")),
    ("msm-spaces-3_<_90%", _latent_should("disease", DISEASES[:4], " 3 < 90% ")),
    ("msm-1-without-should", {"bool": {"filter": [{"exists": {"field": "text"}}], "minimum_should_match": 1}}),
    ("msm-pct-without-should", {"bool": {"filter": [{"exists": {"field": "text"}}], "minimum_should_match": "50%"}}),
    ("msm-10pct-rounds-to-0", _latent_should("disease", DISEASES[:4], "10%")),
    ("msm-100pct", _latent_should("chemical", CHEMICALS[:3], "100%")),
    ("msm-neg-100pct", _latent_should("chemical", CHEMICALS[:3], "-100%")),
    ("msm-zero-pure-should", _latent_should("disease", DISEASES[:4], 0)),
    ("msm-3<90%-of-3", _latent_should("disease", DISEASES[:3], "3<90%")),
    ("msm-3<90%-of-4", _latent_should("disease", DISEASES[:4], "3<90%")),
    ("msm-3<90%-of-6", _latent_should("disease", DISEASES, "3<90%")),
    ("msm-2<-25%_9<-3-of-2", _latent_should("disease", DISEASES[:2], "2<-25% 9<-3")),
    ("msm-2<-25%_9<-3-of-6", _latent_should("disease", DISEASES, "2<-25% 9<-3")),
    (
        "msm-2<-25%_9<-3-of-11",
        {
            "bool": {
                "should": [{"term": {"latent.disease": v}} for v in DISEASES]
                + [{"term": {"latent.chemical": v}} for v in CHEMICALS],
                "minimum_should_match": "2<-25% 9<-3",
            }
        },
    ),
    # should is optional next to must/filter unless msm says otherwise
    ("filter+should-no-msm", _latent_should("disease", ["flu"], filter=[{"term": {"latent.chemical": "insulin"}}])),
    ("filter+should-msm-1", _latent_should("disease", ["flu", "covid"], 1, filter=[{"exists": {"field": "text"}}])),
    ("must+should-msm-0", _latent_should("disease", ["flu", "covid"], 0, must=[{"term": {"reviewed": True}}])),
    ("must_not+should", _latent_should("disease", ["flu", "covid"], must_not=[{"term": {"latent.disease": "asthma"}}])),
    ("filter-context-should-only", {"bool": {"filter": [_latent_should("organism", ["human", "yeast"])]}}),
    ("pure-must_not", {"bool": {"must_not": [{"terms": {"latent.disease": ["flu", "covid"]}}]}}),
    ("must_not-exists", {"bool": {"must_not": [{"exists": {"field": "latent.chemical"}}]}}),
    ("empty-bool", {"bool": {}}),
    # keyword exactness
    ("term-case-sensitive", {"term": {"latent.organism": "rat"}}),
    ("term-Rat", {"term": {"latent.organism": "Rat"}}),
    ("term-with-space", {"term": {"latent.organism": "Homo sapiens"}}),
    ("terms-empty-list", {"terms": {"latent.disease": []}}),
    ("title.keyword-exact", {"term": {"title.keyword": "Blood cells"}}),
    ("title.keyword-lowercase", {"term": {"title.keyword": "blood cells"}}),
    # numbers and booleans
    ("term-int-as-string", {"term": {INT_FIELD: "7"}}),
    ("term-bool-false", {"term": {BOOL_FIELD: False}}),
    ("term-bool-string", {"term": {BOOL_FIELD: "true"}}),
    ("range-float-gte-lte-edges", {"range": {FLOAT_FIELD: {"gte": 2.5, "lte": 5.0}}}),
    ("range-float-gt-lt-edges", {"range": {FLOAT_FIELD: {"gt": 2.5, "lt": 5.0}}}),
    ("range-int-fractional-gte", {"range": {INT_FIELD: {"gte": 10.5}}}),
    ("range-int-fractional-lt", {"range": {INT_FIELD: {"lt": 10.5}}}),
    ("range-empty-interval", {"range": {INT_FIELD: {"gt": 20, "lt": 21}}}),
    # exists
    ("exists-text-incl-empty-string", {"exists": {"field": "text"}}),
    ("exists-latent-object", {"exists": {"field": "latent"}}),
    ("exists-bool", {"exists": {"field": BOOL_FIELD}}),
    # text analysis: no stop words, no stemming in the standard analyzer
    ("match-stopword-the", {"match": {"text": "the"}}),
    ("match-singular-cell", {"match": {"text": "cell"}}),
    ("match-plural-cells", {"match": {"text": "cells"}}),
    ("match-mice-not-mouse", {"match": {"text": "mice"}}),
    ("match-uppercase-query", {"match": {"text": "TUMOR Growth"}}),
    ("match-and", {"match": {"text": {"query": "the cell", "operator": "and"}}}),
    ("match-msm-2-of-3", {"match": {"text": {"query": "tumor drug liver", "minimum_should_match": 2}}}),
    ("match-msm-neg-1-of-3", {"match": {"text": {"query": "tumor drug liver", "minimum_should_match": "-1"}}}),
    ("match-msm-66pct-of-3", {"match": {"text": {"query": "tumor drug liver", "minimum_should_match": "66%"}}}),
    ("match-operator-uppercase-AND", {"match": {"text": {"query": "tumor growth", "operator": "AND"}}}),
    ("match-on-keyword-field", {"match": {"title.keyword": "Blood cells"}}),
    ("match-on-latent-keyword", {"match": {"latent.organism": "Homo sapiens"}}),
    ("range-string-bounds", {"range": {FLOAT_FIELD: {"gte": "2.5", "lt": "5"}}}),
    ("bool-clause-not-a-list", {"bool": {"filter": {"term": {"latent.disease": "flu"}}, "must_not": {"term": {"reviewed": True}}}}),
    ("match-title-analyzed", {"match": {"title": "CELLS"}}),
    (
        "multi_match-and-per-field",
        {"multi_match": {"query": "blood cells", "fields": ["title", "text"], "type": "best_fields", "operator": "and"}},
    ),
    ("multi_match-or", {"multi_match": {"query": "receptor pathway", "fields": ["title", "text"]}}),
    # ids / match_all / match_none
    ("ids", {"ids": {"values": ["d000", "d001", "d150", "d239", "nope"]}}),
    ("match_all", {"match_all": {}}),
    ("match_none", {"match_none": {}}),
    # nested: conditions must hold on the same mention
    (
        "nested-same-mention",
        {
            "nested": {
                "path": "mentions",
                "query": {"bool": {"must": [{"term": {"mentions.text": "flu"}}, {"term": {"mentions.type": "chemical"}}]}},
            }
        },
    ),
    (
        "two-nested-any-mentions",
        {
            "bool": {
                "must": [
                    {"nested": {"path": "mentions", "query": {"term": {"mentions.text": "flu"}}}},
                    {"nested": {"path": "mentions", "query": {"term": {"mentions.type": "chemical"}}}},
                ]
            }
        },
    ),
    (
        "nested-must_not-inside",
        {"nested": {"path": "mentions", "query": {"bool": {"must_not": [{"term": {"mentions.type": "disease"}}]}}}},
    ),
    (
        "must_not-nested",
        {"bool": {"must_not": [{"nested": {"path": "mentions", "query": {"term": {"mentions.type": "disease"}}}}]}},
    ),
    ("nested-match_all", {"nested": {"path": "mentions", "query": {"match_all": {}}}}),
    (
        "nested-range-and-msm",
        {
            "nested": {
                "path": "mentions",
                "query": {
                    "bool": {
                        "filter": [{"range": {"mentions.start": {"gte": 30, "lt": 90}}}],
                        "should": [
                            {"term": {"mentions.text": "flu"}},
                            {"term": {"mentions.text": "covid"}},
                            {"term": {"mentions.type": "disease"}},
                        ],
                        "minimum_should_match": 2,
                    }
                },
            }
        },
    ),
]

# Cases where osmem-server was checked against hand-evaluated OpenSearch semantics and found
# wrong; they are excluded from the differential set. name -> why. (Empty: none found so far.)
OSMEM_KNOWN_WRONG: dict[str, str] = {}


def compact(query: dict[str, Any]) -> str:
    return json.dumps(query, separators=(",", ":"), sort_keys=False)


def all_differential_cases(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    cases = [(f"edge-{n}", q) for n, q in EDGE_CASES] + generate_queries(docs)
    return [(n, q) for n, q in cases if n not in OSMEM_KNOWN_WRONG]
