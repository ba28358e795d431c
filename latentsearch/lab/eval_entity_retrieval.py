"""Named-entity retrieval evaluation: R-Precision of type queries (`latentsearch eval entity-retrieval`).

Every sentence of a CoNLL file becomes one document in a fresh embedded index; every gold type
(for WNUT-17: person, location, corporation, product, creative work, group) is a query, and a
sentence is relevant when it holds a gold mention of that type. R-Precision = precision at
R = number of relevant sentences. Systems, all through the same engine and DSL:

- `ours`: spaCy spans → SmolLM2 V vectors → trained head, nested k-NN (score_mode max)
- `ours-no-head`: the same spans with the raw V vectors (normalised), the paper's "-No MLP" ablation
- `ours-gold-spans`: gold spans instead of detected ones (span oracle)
- `bm25`: the type name as a `match` query on the text
- `minilm`: all-MiniLM-L6-v2 sentence vectors, k-NN with the embedded type name
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from latentsearch import dsl
from latentsearch.backends import BulkAction, open_backend
from latentsearch.config import BackendConfig, EntitySchema
from latentsearch.lab.train_mention_head import encode_cached
from latentsearch.mappings.builder import opensearch_index_body
from latentsearch.models.factory import get_embedder
from latentsearch.models.mention_head import ARTIFACT, MentionVectorizer, normalise, project
from latentsearch.models.spans import read_conll
from latentsearch.query.entities import mention_type_clause

FLOAT32 = 4


class SystemScores(BaseModel):
    system: str
    r_precision: dict[str, float]
    macro: float


class StorageRow(BaseModel):
    system: str
    vectors: int
    dimension: int
    bytes_per_vector: int
    total_bytes: int


class EntityRetrievalReport(BaseModel):
    conll: str
    documents: int
    relevant: dict[str, int]  # type -> R
    detected_mentions: int
    gold_mentions: int
    gold_span_coverage: float  # share of gold spans matched by a detected span with the same end
    systems: list[SystemScores]
    storage: list[StorageRow]
    ours_vs_best_baseline: float
    head: str
    seconds: float


def _index(backend: Any, name: str, texts: list[str], sent_vecs: np.ndarray, mentions: list[list[dict[str, Any]]],
           mention_dim: int) -> None:
    body = opensearch_index_body(EntitySchema(), dimension=sent_vecs.shape[1], mention_dimension=mention_dim,
                                 embedder="all-MiniLM-L6-v2")
    backend.delete_index(name, missing_ok=True)
    backend.create_index(name, body)
    actions = []
    for i, (text, vec, ms) in enumerate(zip(texts, sent_vecs, mentions)):
        src: dict[str, Any] = {"doc_id": str(i), "text": text, "vector": vec.tolist()}
        if ms:
            src["mentions"] = ms
        actions.append(BulkAction(str(i), src))
    for b in range(0, len(actions), 500):
        backend.bulk(name, actions[b : b + 500])
    backend.refresh(name)


def _mentions(spans: list[list[Any]], vectors: list[np.ndarray]) -> list[list[dict[str, Any]]]:
    return [[{"text": s.text, "start": s.start, "end": s.end, "vector": v.tolist()} for s, v in zip(sp, vs)]
            for sp, vs in zip(spans, vectors)]


def evaluate(conll: Path, *, limit: int | None = None, head_path: Path = ARTIFACT, db: Path | None = None,
             progress: bool = True) -> EntityRetrievalReport:
    started = time.perf_counter()
    sents = read_conll(conll)[:limit] if limit else read_conll(conll)
    texts = [s.text for s in sents]
    names = list(dict.fromkeys(t for s in sents for t in s.types))
    if not names:
        raise ValueError(f"{conll} has no gold entity mentions to build type queries from")
    relevant = {n: {i for i, s in enumerate(sents) if n in s.types} for n in names}

    vz = MentionVectorizer(head_path)
    detected = vz.detector.detect(texts)
    gold = [s.spans for s in sents]
    # one forward pass per sentence serves both span sets (vectors cached under $LATENTSEARCH_HOME/cache)
    both = [d + g for d, g in zip(detected, gold)]
    flat = encode_cached(vz.encoder, f"eval-{Path(conll).stem}", texts, both, progress)
    raw_det: list[np.ndarray] = []
    raw_gold: list[np.ndarray] = []
    pos = 0
    for d, g in zip(detected, gold):
        raw_det.append(flat[pos : pos + len(d)])
        raw_gold.append(flat[pos + len(d) : pos + len(d) + len(g)])
        pos += len(d) + len(g)
    embedder = get_embedder()
    sent_vecs = embedder.encode(texts)
    type_raw = vz.encoder.encode(names, [[_whole(n)] for n in names])
    type_raw = np.stack([r[0] for r in type_raw])
    q_head, q_raw, q_minilm = project(vz.head, type_raw), normalise(type_raw), embedder.encode(names)

    tmp = tempfile.TemporaryDirectory(prefix="ls-entity-eval-") if db is None else None
    backend = open_backend(BackendConfig(kind="embedded", embedded_path=Path(tmp.name if tmp else db)))
    ours = _mentions(detected, [project(vz.head, r) for r in raw_det])
    _index(backend, "ours", texts, sent_vecs, ours, vz.config.out_dim)
    _index(backend, "raw", texts, sent_vecs, _mentions(detected, [normalise(r) for r in raw_det]), vz.encoder.dimension)
    _index(backend, "gold", texts, sent_vecs, _mentions(gold, [project(vz.head, r) for r in raw_gold]),
           vz.config.out_dim)

    def retrieved(index: str, query: dict[str, Any], r: int) -> set[int]:
        res = backend.search(index, {"size": r, "query": query, "_source": False})
        return {int(h["_id"]) for h in res["hits"]["hits"]}

    systems: dict[str, dict[str, float]] = {k: {} for k in ("ours", "ours-no-head", "ours-gold-spans", "bm25",
                                                             "minilm")}
    for qi, name in enumerate(names):
        r = len(relevant[name])
        queries = {
            "ours": ("ours", mention_type_clause(name, k=r, vector=q_head[qi].tolist(), inner_hits=None)),
            "ours-no-head": ("raw", mention_type_clause(name, k=r, vector=q_raw[qi].tolist(), inner_hits=None)),
            "ours-gold-spans": ("gold", mention_type_clause(name, k=r, vector=q_head[qi].tolist(), inner_hits=None)),
            "bm25": ("ours", dsl.match("text", name)),
            "minilm": ("ours", dsl.knn("vector", q_minilm[qi].tolist(), k=r)),
        }
        for system, (index, query) in queries.items():
            got = retrieved(index, query, r)
            systems[system][name] = round(len(got & relevant[name]) / r, 4)
    if tmp is not None:
        tmp.cleanup()

    rows = [SystemScores(system=k, r_precision=v, macro=round(float(np.mean(list(v.values()))), 4))
            for k, v in systems.items()]
    n_det = sum(len(d) for d in detected)
    n_gold = sum(len(g) for g in gold)
    ends = [{s.end for s in d} for d in detected]
    covered = sum(1 for g, e in zip(gold, ends) for s in g if s.end in e)
    best_baseline = max(r.macro for r in rows if r.system in ("bm25", "minilm"))
    ours_macro = next(r.macro for r in rows if r.system == "ours")
    storage = [
        StorageRow(system="ours (per mention)", vectors=n_det, dimension=vz.config.out_dim,
                   bytes_per_vector=vz.config.out_dim * FLOAT32, total_bytes=n_det * vz.config.out_dim * FLOAT32),
        StorageRow(system="ours-no-head (per mention)", vectors=n_det, dimension=vz.encoder.dimension,
                   bytes_per_vector=vz.encoder.dimension * FLOAT32,
                   total_bytes=n_det * vz.encoder.dimension * FLOAT32),
        StorageRow(system="minilm (per sentence)", vectors=len(texts), dimension=embedder.dimension,
                   bytes_per_vector=embedder.dimension * FLOAT32, total_bytes=len(texts) * embedder.dimension * FLOAT32),
    ]
    return EntityRetrievalReport(
        conll=str(conll), documents=len(texts), relevant={n: len(v) for n, v in relevant.items()},
        detected_mentions=n_det, gold_mentions=n_gold, gold_span_coverage=round(covered / max(n_gold, 1), 4),
        systems=rows, storage=storage,
        ours_vs_best_baseline=round(ours_macro / best_baseline, 3) if best_baseline else float("inf"),
        head=str(head_path), seconds=round(time.perf_counter() - started, 1),
    )


def _whole(text: str):
    from latentsearch.models.spans import Span

    return Span(start=0, end=len(text), text=text, source="custom")
