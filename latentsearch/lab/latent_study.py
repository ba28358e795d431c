"""Does the latent signal pay? Every way of using it, on one judged query set, from one collected snapshot.

Collecting is the slow part (question extraction with the LLM, one BM25 search per query); it runs once and is
saved. Evaluating a policy is then numpy over the saved lists, so a grid of policies and a cross-validated fit take
seconds, and the figures of every variant come from the same rankings:

    study = collect(backend, index, embedder, extractor, queries, qrels, out=Path("study"))
    table = evaluate(study, POLICIES)

The dense ranking is exact (every chunk vector of the index, a document scores as its best chunk), BM25 comes
from the engine (top `bm25_depth`), hybrid is RRF over the two as `query.search` fuses them. Latent variants:

- filter: the hybrid list restricted to documents sharing >= `msm` question values (backfilled with the rest);
- boost: hybrid RRF score + `boost` x (share of the question's values the document holds);
- rrf3: RRF over BM25, dense and a latent list (dense order among matching documents), the latent list weighted;
- expand: BM25 over the claim plus its latent values (no document-side LLM), fused with dense by RRF.

Question values come from one of three sources, so the table separates "the model's values" from "values
chosen from the index": free (the extractor's free text mapped to index values as the rewriter does), chosen (the
LLM scores candidate index values — those of the top dense documents and the nearest by embedding — and keeps the
ones above a confidence), prf (the candidates' frequency in the top dense documents, no LLM).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from latentsearch.backends import SearchBackend
from latentsearch.ingest.vocabulary import load_vocabulary, normalise
from latentsearch.progress import track
from latentsearch.query.search import RRF_RANK_CONSTANT, lexical_query

SOURCES = ("free", "chosen", "chosen+docs", "prf")


class Study(BaseModel):
    """A collected snapshot: everything the policies need, nothing they compute."""

    index: str
    types: list[str]
    qids: list[str]
    texts: list[str]
    relevant: dict[str, list[str]]
    doc_ids: list[str]
    doc_values: dict[str, list[list[str]]] = Field(description="type -> per document (normalised values)")
    bm25: list[dict[str, float]] = Field(description="per query: doc -> BM25 score (engine top bm25_depth)")
    bm25_expanded: dict[str, list[dict[str, float]]] = Field(default_factory=dict,
                                                            description="source -> per query, BM25 of claim+values")
    question: dict[str, list[dict[str, list[tuple[str, float]]]]] = Field(
        default_factory=dict, description="source -> per query -> type -> [(normalised value, confidence)]")
    dense_path: str = Field(description="npy file: queries x documents dense scores")

    def dense(self) -> np.ndarray:
        return np.load(self.dense_path)


def scan(backend: SearchBackend, index: str, fields: Sequence[str], page: int = 2000):
    """Every chunk's `_source` (only `fields`), page by page."""
    start = 0
    while True:
        hits = backend.search(index, {"size": page, "from": start, "query": {"match_all": {}},
                                      "_source": list(fields)})["hits"]["hits"]
        yield from (h["_source"] for h in hits)
        if len(hits) < page:
            return
        start += page


def collect(
    backend: SearchBackend, index: str, embedder, extractor, queries: dict[str, str],
    qrels: dict[str, dict[str, int]], out: Path, *, types: Sequence[str], query_text_type: str,
    bm25_depth: int = 1000, candidates_top_docs: int = 20, candidates_nearest: int = 12,
    vocabulary: bool = True, progress: bool = True,
) -> Study:
    """Read the index once, run every query's searches and question extraction, save to `out`. With
    `vocabulary` and a stored value vocabulary, values are its concepts (raw values map to their concept;
    dropped concepts are left out); otherwise normalised raw values."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = load_vocabulary(backend, index) if vocabulary else None

    def canon(t: str, raw: str) -> str | None:
        if vocab is not None and t in vocab.types:
            c = vocab.concept_of(t, raw)
            return c.name if c is not None else None
        return normalise(raw) or None

    doc_index: dict[str, int] = {}
    vectors: list[np.ndarray] = []
    owner: list[int] = []
    values: dict[str, list[set[str]]] = {t: [] for t in types}
    for src in track(list(scan(backend, index, ["doc_id", "vector", "latent"])), "reading the index",
                     enabled=progress):
        d = doc_index.setdefault(src["doc_id"], len(doc_index))
        for t in types:
            if len(values[t]) <= d:
                values[t].append(set())
            values[t][d].update(c for c in (canon(t, v) for v in (src.get("latent") or {}).get(t, [])) if c)
        vectors.append(np.asarray(src["vector"], dtype=np.float32))
        owner.append(d)
    doc_ids = list(doc_index)
    chunk_vecs = np.stack(vectors)
    chunk_vecs /= np.linalg.norm(chunk_vecs, axis=1, keepdims=True).clip(1e-9)
    owner_arr = np.asarray(owner)

    qids = list(queries)
    texts = [queries[q] for q in qids]
    qvecs = np.asarray(embedder.encode(texts), dtype=np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True).clip(1e-9)
    chunk_scores = qvecs @ chunk_vecs.T
    dense = np.full((len(qids), len(doc_ids)), -1.0, dtype=np.float32)
    for c in range(chunk_vecs.shape[0]):  # a document scores as its best chunk
        np.maximum(dense[:, owner_arr[c]], chunk_scores[:, c], out=dense[:, owner_arr[c]])
    dense_path = out / "dense.npy"
    np.save(dense_path, dense)

    def bm25(text: str) -> dict[str, float]:
        hits = backend.search(index, {"size": bm25_depth * 2, "query": lexical_query(text),
                                      "_source": ["doc_id"]})["hits"]["hits"]
        found: dict[str, float] = {}
        for h in hits:
            found.setdefault(h["_source"]["doc_id"], float(h["_score"]))
        return dict(list(found.items())[:bm25_depth])

    lexical = [bm25(t) for t in track(texts, "BM25", enabled=progress)]

    # the index's values per type (the answer space), with embeddings for nearest-value candidates
    space = {t: sorted({v for s in values[t] for v in s}) for t in types}
    space_vecs = {t: np.asarray(embedder.encode(space[t]), dtype=np.float32) if space[t] else None for t in types}
    for t in types:
        if space_vecs[t] is not None:
            space_vecs[t] /= np.linalg.norm(space_vecs[t], axis=1, keepdims=True).clip(1e-9)

    question: dict[str, list[dict[str, list[tuple[str, float]]]]] = {s: [] for s in SOURCES}
    for qi, text in enumerate(track(texts, "question values", enabled=progress)):
        top_docs = np.argsort(-dense[qi])[:candidates_top_docs]
        free_q, chosen_q, docs_q, prf_q = {}, {}, {}, {}
        for t in types:
            if not space[t]:
                free_q[t] = chosen_q[t] = docs_q[t] = prf_q[t] = []
                continue
            # free: the extractor's own words, mapped to index values (exact/normalised, else nearest >= 0.75)
            said = extractor.extract([text], query_text_type, t.replace("_", " "))[0]
            mapped: list[tuple[str, float]] = []
            for v in (canon(t, v) or normalise(v) for v in said):
                if v in space[t]:
                    mapped.append((v, 1.0))
                elif v:
                    sims = space_vecs[t] @ _unit(embedder.encode([v])[0])
                    j = int(np.argmax(sims))
                    if sims[j] >= 0.75:
                        mapped.append((space[t][j], float(sims[j])))
            free_q[t] = mapped
            # chosen: the LLM scores the values nearest to the question (what the rewriter does); chosen+docs:
            # the values of the top dense documents (by frequency) join the candidates
            freq = Counter(v for d in top_docs for v in values[t][d])
            near = [space[t][j] for j in np.argsort(-(space_vecs[t] @ qvecs[qi]))[:candidates_nearest]]
            prf_q[t] = [(v, n / candidates_top_docs) for v, n in freq.most_common(candidates_nearest)]
            for found, cands in ((chosen_q, near),
                                 (docs_q, list(dict.fromkeys([v for v, _ in freq.most_common(candidates_nearest)]
                                                             + near)))):
                probs = extractor.option_probabilities(text, query_text_type, t.replace("_", " "), cands)
                found[t] = sorted(zip(cands, probs), key=lambda x: -x[1])
        question["free"].append(free_q)
        question["chosen"].append(chosen_q)
        question["chosen+docs"].append(docs_q)
        question["prf"].append(prf_q)

    expanded: dict[str, list[dict[str, float]]] = {}
    for source in ("free", "chosen", "chosen+docs"):
        rows = []
        for qi, text in enumerate(track(texts, f"BM25 + {source} values", enabled=progress)):
            extra = [v for t in types for v, p in question[source][qi].get(t, [])[:1] if p >= 0.0]
            rows.append(bm25(text + " " + " ".join(extra)) if extra else lexical[qi])
        expanded[source] = rows

    study = Study(
        index=index, types=list(types), qids=qids, texts=texts,
        relevant={q: [d for d, s in qrels.get(q, {}).items() if s > 0] for q in qids},
        doc_ids=doc_ids, doc_values={t: [sorted(s) for s in values[t]] for t in types},
        bm25=lexical, bm25_expanded=expanded, question=question, dense_path=str(dense_path),
    )
    (out / "study.json").write_text(study.model_dump_json())
    return study


def load_study(folder: Path) -> Study:
    return Study.model_validate_json((folder / "study.json").read_text())


def _unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-9)


# -- policies: pure functions of the snapshot --------------------------------------------------------------------


class Policy(BaseModel):
    """One way of using the latent signal. `method` none = plain hybrid (or `base`)."""

    method: str = Field("none", description="none | filter | boost | rrf3 | expand")
    base: str = Field("hybrid", description="dense | bm25 | hybrid: the unfiltered ranking")
    source: str = Field("chosen", description="free | chosen | prf: where the question's values come from")
    types: list[str] | None = Field(None, description="latent types used (None: all)")
    min_confidence: float = Field(0.0, description="question values below this confidence give no clause")
    top_values: int = Field(1, description="question values kept per type")
    msm: int = 1
    boost: float = 0.0
    weight: float = 1.0
    c: int = RRF_RANK_CONSTANT

    def label(self) -> str:
        if self.method == "none":
            return self.base
        extra = {"filter": f"msm={self.msm}", "boost": f"boost={self.boost:g}", "rrf3": f"w={self.weight:g}",
                 "expand": ""}[self.method]
        types = "all" if self.types is None else "+".join(self.types)
        return (f"{self.base}+{self.method}[{self.source}; {types}; conf>={self.min_confidence:g}; "
                f"top{self.top_values}; {extra}]")


class Evaluator:
    """Per-query rankings and metrics for a policy, vectorised over documents (numpy arrays of length D).

    Per-query metric vectors are memoised per policy, so cross-validation over a grid only averages."""

    def __init__(self, study: Study, depth: int = 100):
        self.s, self.depth = study, depth
        self.dense = study.dense()
        n_q, n_d = self.dense.shape
        self.doc_pos = {d: i for i, d in enumerate(study.doc_ids)}
        c = RRF_RANK_CONSTANT
        self.dense_order = np.argsort(-self.dense, axis=1)
        self.rrf_dense = np.zeros((n_q, n_d), dtype=np.float64)
        ranks = np.empty(n_d, dtype=np.int64)
        for q in range(n_q):
            ranks[self.dense_order[q]] = np.arange(n_d)
            self.rrf_dense[q] = 1.0 / (c + ranks + 1)
        self.rrf_lex = self._lexical(study.bm25)
        self.rrf_lex_exp = {src: self._lexical(rows) for src, rows in study.bm25_expanded.items()}
        self.postings = {t: self._postings(study.doc_values[t]) for t in study.types}
        self.rel = [np.asarray([self.doc_pos[d] for d in study.relevant[q] if d in self.doc_pos], dtype=np.int64)
                    for q in study.qids]
        self._memo: dict[str, dict[str, np.ndarray]] = {}

    def _lexical(self, rows: Sequence[dict[str, float]]) -> np.ndarray:
        out = np.zeros((len(rows), len(self.s.doc_ids)), dtype=np.float64)
        for q, row in enumerate(rows):
            docs = [self.doc_pos[d] for d, _ in sorted(row.items(), key=lambda x: -x[1]) if d in self.doc_pos]
            out[q, docs] = 1.0 / (RRF_RANK_CONSTANT + np.arange(len(docs)) + 1)
        return out

    @staticmethod
    def _postings(per_doc: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        post: dict[str, list[int]] = {}
        for d, vs in enumerate(per_doc):
            for v in vs:
                post.setdefault(v, []).append(d)
        return {v: np.asarray(ds, dtype=np.int64) for v, ds in post.items()}

    def question_values(self, qi: int, p: Policy) -> dict[str, list[str]]:
        found = self.s.question[p.source][qi]
        types = p.types or self.s.types
        return {t: [v for v, conf in found.get(t, [])[: p.top_values] if conf >= p.min_confidence] for t in types}

    def matches(self, qv: dict[str, list[str]]) -> np.ndarray:
        """Per document: how many question types it matches (any of that type's values)."""
        n = np.zeros(len(self.s.doc_ids), dtype=np.int32)
        for t, vs in qv.items():
            hit = np.zeros(len(n), dtype=bool)
            for v in vs:
                if v in self.postings[t]:
                    hit[self.postings[t][v]] = True
            n += hit
        return n

    def _top(self, score: np.ndarray) -> np.ndarray:
        depth = min(self.depth, len(score))
        head = np.argpartition(-score, depth - 1)[:depth]
        return head[np.argsort(-score[head], kind="stable")]

    def base_score(self, qi: int, base: str, lexical: np.ndarray | None = None) -> np.ndarray:
        lex = self.rrf_lex[qi] if lexical is None else lexical
        if base == "dense":
            return self.rrf_dense[qi]
        if base == "bm25":
            return lex + 1e-9 * self.rrf_dense[qi]  # ties (documents BM25 never returned) broken by dense
        return lex + self.rrf_dense[qi]

    def ranking(self, qi: int, p: Policy) -> tuple[np.ndarray, dict[str, Any]]:
        info: dict[str, Any] = {"fired": False}
        if p.method == "none":
            return self._top(self.base_score(qi, p.base)), info
        if p.method == "expand":
            return self._top(self.base_score(qi, p.base, self.rrf_lex_exp[p.source][qi])), info
        qv = self.question_values(qi, p)
        n_types = sum(1 for v in qv.values() if v)
        if not n_types:
            return self._top(self.base_score(qi, p.base)), info
        match = self.matches(qv)
        passes = match >= min(p.msm, n_types)
        info.update(fired=True, passes=passes)
        base = self.base_score(qi, p.base)
        if p.method == "filter":  # the filtered ranking first (its own RRF ranks), then the rest: backfill
            order = self.dense_order[qi]
            sub_rank = np.cumsum(passes[order]) - 1
            rrf_sub = np.zeros_like(base)
            rrf_sub[order[passes[order]]] = 1.0 / (RRF_RANK_CONSTANT + sub_rank[passes[order]] + 1)
            lex = self.rrf_lex[qi]
            lex_order = np.argsort(-lex)
            lex_order = lex_order[lex[lex_order] > 0]
            lp = passes[lex_order]
            lex_sub = np.zeros_like(base)
            lex_sub[lex_order[lp]] = 1.0 / (RRF_RANK_CONSTANT + np.arange(int(lp.sum())) + 1)
            first = {"dense": rrf_sub, "bm25": lex_sub, "hybrid": rrf_sub + lex_sub}[p.base]
            return self._top(np.where(passes, 10.0 + first, base)), info
        if p.method == "boost":
            return self._top(base + p.boost * match / n_types), info
        if p.method == "rrf3":
            order = self.dense_order[qi]
            sub_rank = np.cumsum(passes[order]) - 1
            latent = np.zeros_like(base)
            latent[order[passes[order]]] = p.weight / (RRF_RANK_CONSTANT + sub_rank[passes[order]] + 1)
            return self._top(base + latent), info
        raise ValueError(f"unknown method {p.method!r}; supported: none, filter, boost, rrf3, expand")

    def per_query(self, p: Policy) -> dict[str, np.ndarray]:
        """Per-query nDCG@10, Recall@100, hits in the top 10, relevant count, fired, relevant kept."""
        key = p.model_dump_json()
        if key in self._memo:
            return self._memo[key]
        n = len(self.s.qids)
        out = {k: np.zeros(n) for k in ("ndcg", "r100", "hit10", "nrel", "fired", "kept")}
        discounts = 1.0 / np.log2(np.arange(2, 12))
        for qi in range(n):
            rel = self.rel[qi]
            if not len(rel):
                continue
            ranked, info = self.ranking(qi, p)
            gains = np.isin(ranked[:10], rel).astype(float)
            idcg = discounts[: min(len(rel), 10)].sum()
            out["ndcg"][qi] = float(gains @ discounts[: len(gains)]) / idcg
            out["r100"][qi] = np.isin(rel, ranked[:100]).mean()
            out["hit10"][qi] = gains.sum()
            out["nrel"][qi] = len(rel)
            if info["fired"]:
                out["fired"][qi] = 1
                out["kept"][qi] = info["passes"][rel].sum()
        self._memo[key] = out
        return out

    def metrics(self, p: Policy, queries: Sequence[int] | None = None) -> dict[str, float]:
        """nDCG@10, Recall@100, P@10, R@10, F1@10 (binary relevance, as SciFact judges) and filter diagnostics."""
        pq = self.per_query(p)
        idx = np.asarray(range(len(self.s.qids)) if queries is None else list(queries), dtype=np.int64)
        idx = idx[pq["nrel"][idx] > 0]
        pm = float(np.mean(pq["hit10"][idx] / 10))
        rm = float(np.mean(pq["hit10"][idx] / pq["nrel"][idx]))
        fired = pq["fired"][idx] > 0
        kept_of = pq["nrel"][idx][fired].sum()
        return {"ndcg@10": float(pq["ndcg"][idx].mean()), "recall@100": float(pq["r100"][idx].mean()),
                "p@10": pm, "r@10": rm, "f1@10": 2 * pm * rm / (pm + rm) if pm + rm else 0.0,
                "queries": int(len(idx)), "fired": float(fired.mean()) if len(idx) else 0.0,
                "relevant_kept": float(pq["kept"][idx][fired].sum() / kept_of) if kept_of else float("nan")}


def cross_validate(ev: Evaluator, grid: Sequence[Policy], folds: int = 5, seed: int = 13,
                   objective: str = "ndcg@10") -> dict[str, Any]:
    """Fit the best policy of `grid` on k-1 folds, score it on the held-out fold; the held-out figures over all
    queries (each query scored by the policy fitted without it) and the policy each fold chose. Deterministic
    for a seed."""
    n = len(ev.s.qids)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    chosen: list[Policy] = []
    for k in range(folds):
        train = np.concatenate([parts[j] for j in range(folds) if j != k]).tolist()
        chosen.append(max(grid, key=lambda p: ev.metrics(p, train)[objective]))
    # one ranking per query from its fold's policy: pool the per-query vectors, then the usual means
    pooled = {key: np.zeros(n) for key in ev.per_query(chosen[0])}
    for k, p in enumerate(chosen):
        pq = ev.per_query(p)
        for key in pooled:
            pooled[key][parts[k]] = pq[key][parts[k]]
    idx = np.arange(n)[pooled["nrel"] > 0]
    pm = float(np.mean(pooled["hit10"][idx] / 10))
    rm = float(np.mean(pooled["hit10"][idx] / pooled["nrel"][idx]))
    fired = pooled["fired"][idx] > 0
    kept_of = pooled["nrel"][idx][fired].sum()
    held = {"ndcg@10": float(pooled["ndcg"][idx].mean()), "recall@100": float(pooled["r100"][idx].mean()),
            "p@10": pm, "r@10": rm, "f1@10": 2 * pm * rm / (pm + rm) if pm + rm else 0.0,
            "fired": float(fired.mean()),
            "relevant_kept": float(pooled["kept"][idx][fired].sum() / kept_of) if kept_of else float("nan")}
    return {"held_out": held, "chosen": [p.label() for p in chosen]}


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=float)
