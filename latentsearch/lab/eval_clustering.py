"""`latentsearch eval clustering`: do latent entities make better clusters than the text embedding alone?

As in MTEB clustering: MiniBatchKMeans (batch 500, k = number of labels), V-measure against the
gold labels, for three representations of each document: MiniLM embedding of the text; MiniLM
embedding of its extracted latent entities; their concatenation (each part L2-normalised); and the
concatenation with the latent part weighted, the weight chosen on a disjoint sample of the same corpus
(`fit_n` posts, never the evaluated ones), so that it is a setting a user could fit, not a peek at the test.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel


class ClusteringRow(BaseModel):
    representation: str
    v_measure: float
    v_measure_std: float


class ClusteringReport(BaseModel):
    documents: int
    labels: int
    text_type: str
    latent_entity_type: str
    extraction_seconds: float
    rows: list[ClusteringRow]
    latent_weight: float | None = None  # the weighted concatenation's weight, fitted on `fit_documents`
    fit_documents: int = 0
    fit_scores: dict[str, float] = {}  # weight -> V-measure on the fitting sample
    samples: list[dict[str, Any]]


def read_labeled(path: Path, text_field: str, label_field: str) -> list[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                text, label = obj.get(text_field), obj.get(label_field)
                if isinstance(text, str) and text.strip() and label is not None:
                    out.append((text, str(label)))
    return out


def stratified_sample(rows: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """About n rows with every label in proportion (at least one per label)."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        by_label[r[1]].append(r)
    total = len(rows)
    out = []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        out.extend(items[: max(1, round(n * len(items) / total))])
    rng.shuffle(out)
    return out[:n]


def v_measure(x: np.ndarray, labels: list[str], seeds: int = 5) -> tuple[float, float]:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    k = len(set(labels))
    scores = []
    for seed in range(seeds):
        km = MiniBatchKMeans(n_clusters=k, batch_size=500, n_init="auto", random_state=seed)
        scores.append(v_measure_score(labels, km.fit_predict(x)))
    return float(np.mean(scores)), float(np.std(scores))


def concatenate(text_vecs: np.ndarray, ent_vecs: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """[text, weight * latent] with unit rows when both parts have unit rows (weight 1: the plain concatenation)."""
    return np.hstack([text_vecs, weight * ent_vecs]) / np.sqrt(1.0 + weight * weight)


def evaluate(
    path: Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    n: int = 2000,
    text_type: str = "newsgroup post",
    latent_entity_type: str = "discussion topic",
    adapter: str | Path | None = "default",
    max_input_tokens: int = 256,
    seed: int = 0,
    fit_n: int = 0,
    weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    bf16: bool = False,
) -> ClusteringReport:
    """`fit_n` > 0: also the weighted concatenation, its weight the best of `weights` on `fit_n` other posts."""
    from latentsearch.models.factory import get_embedder, get_extractor

    everything = read_labeled(path, text_field, label_field)
    rows = stratified_sample(everything, n, seed)
    taken = {id(r) for r in rows}
    fit_rows = stratified_sample([r for r in everything if id(r) not in taken], fit_n, seed + 1) if fit_n else []
    texts = [t for t, _ in rows + fit_rows]
    labels = [lab for _, lab in rows]
    m = len(rows)  # about n: the stratified rounding may give a few fewer
    embedder = get_embedder()
    extractor = get_extractor(adapter=adapter, max_input_tokens=max_input_tokens, **({"bf16": True} if bf16 else {}))
    started = time.perf_counter()
    entities = extractor.extract(texts, text_type, latent_entity_type)
    seconds = time.perf_counter() - started
    text_vecs = embedder.encode(texts)
    ent_vecs = embedder.encode([", ".join(e) if e else "unknown" for e in entities])
    fit_scores: dict[str, float] = {}
    if fit_rows:
        fit_labels = [lab for _, lab in fit_rows]
        for w in weights:
            fit_scores[str(w)] = round(v_measure(concatenate(text_vecs[m:], ent_vecs[m:], w), fit_labels)[0], 4)
    text_vecs, ent_vecs = text_vecs[:m], ent_vecs[:m]
    reps = {
        "MiniLM(text)": text_vecs,
        "MiniLM(latent entities)": ent_vecs,
        "concatenation": concatenate(text_vecs, ent_vecs),
    }
    best = float(max(fit_scores, key=fit_scores.__getitem__)) if fit_scores else None
    if best is not None:
        reps[f"concatenation, latent weight {best:g} (fitted on {len(fit_rows)} other posts)"] = \
            concatenate(text_vecs, ent_vecs, best)
    out = []
    for name, x in reps.items():
        mean, std = v_measure(x, labels)
        out.append(ClusteringRow(representation=name, v_measure=round(mean, 4), v_measure_std=round(std, 4)))
    samples = [{"label": lab, "entities": e, "text": t[:120]} for t, lab, e in list(zip(texts, labels, entities))[:8]]
    return ClusteringReport(documents=m, labels=len(set(labels)), text_type=text_type,
                            latent_entity_type=latent_entity_type, extraction_seconds=round(seconds, 1), rows=out,
                            samples=samples, latent_weight=best, fit_documents=len(fit_rows), fit_scores=fit_scores)
