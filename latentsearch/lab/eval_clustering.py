"""`latentsearch eval clustering`: do latent entities make better clusters than the text embedding alone?

As in MTEB clustering: MiniBatchKMeans (batch 500, k = number of labels), V-measure against the
gold labels, for these representations of each document: MiniLM embedding of the text; MiniLM
embedding of its extracted latent entities; their concatenation (each part L2-normalised); and the
concatenation with the latent part weighted, the weight chosen on a disjoint sample of the same corpus
(`fit_n` posts, never the evaluated ones), so that it is a setting a user could fit, not a peek at the test.

With `vocabulary`, the same rows again with the latent side read through a value vocabulary
(`ingest.vocabulary`, built from every extracted value, no labels): each post's values replaced by
their concepts' canonical names, as the index stores them for filters.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel


class ClusteringRow(BaseModel):
    representation: str
    v_measure: float
    v_measure_std: float


class WeightFit(BaseModel):
    """The latent part's weight in the concatenation, chosen on the fitting sample."""

    weight: float
    scores: dict[str, float]  # weight -> V-measure on the fitting sample


class ClusteringReport(BaseModel):
    documents: int
    labels: int
    text_type: str
    latent_entity_type: str
    extraction_seconds: float
    rows: list[ClusteringRow]
    fit_documents: int = 0
    fits: dict[str, WeightFit] = {}  # latent side ("latent entities", "latent concepts") -> its fitted weight
    distinct_values: int = 0  # distinct extracted values over every post (evaluated and fitting)
    concepts: int | None = None  # the vocabulary's concepts for them (None: no vocabulary)
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


def fit_weight(text_vecs: np.ndarray, ent_vecs: np.ndarray, labels: list[str],
               weights: tuple[float, ...]) -> WeightFit:
    """The weight among `weights` whose concatenation clusters `labels` best (ties: the first)."""
    scores = {str(w): round(v_measure(concatenate(text_vecs, ent_vecs, w), labels)[0], 4) for w in weights}
    return WeightFit(weight=float(max(scores, key=scores.__getitem__)), scores=scores)


def concept_names(entities: list[list[str]], etype: str, embedder) -> tuple[list[list[str]], int]:
    """Each post's values replaced by their concepts' names (in order, no repeats), and the number of concepts:
    the vocabulary is built from every value here, as ingest builds it from an index's values."""
    from latentsearch.ingest.vocabulary import build_vocabulary

    counts = Counter(v for values in entities for v in dict.fromkeys(values))
    vocab = build_vocabulary({etype: counts}, embedder)
    named = []
    for values in entities:
        concepts = (vocab.concept_of(etype, v) for v in values)
        named.append(list(dict.fromkeys(c.name for c in concepts if c is not None)))
    return named, len(vocab.concepts.get(etype, []))


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
    vocabulary: bool = False,
) -> ClusteringReport:
    """`fit_n` > 0: also the weighted concatenation, its weight the best of `weights` on `fit_n` other posts.
    `vocabulary`: also every latent row with the values read as vocabulary concepts."""
    from latentsearch.models.factory import get_embedder, get_extractor

    everything = read_labeled(path, text_field, label_field)
    rows = stratified_sample(everything, n, seed)
    taken = {id(r) for r in rows}
    fit_rows = stratified_sample([r for r in everything if id(r) not in taken], fit_n, seed + 1) if fit_n else []
    texts = [t for t, _ in rows + fit_rows]
    labels, fit_labels = [lab for _, lab in rows], [lab for _, lab in fit_rows]
    m = len(rows)  # about n: the stratified rounding may give a few fewer
    embedder = get_embedder()
    extractor = get_extractor(adapter=adapter, max_input_tokens=max_input_tokens, **({"bf16": True} if bf16 else {}))
    started = time.perf_counter()
    entities = extractor.extract(texts, text_type, latent_entity_type)
    seconds = time.perf_counter() - started
    text_vecs = embedder.encode(texts)
    sides = {"latent entities": entities}
    distinct = len({v for values in entities for v in values})
    concepts = None
    if vocabulary:
        sides["latent concepts"], concepts = concept_names(entities, latent_entity_type, embedder)
    reps = {"MiniLM(text)": text_vecs[:m]}
    fits: dict[str, WeightFit] = {}
    for side, values in sides.items():
        ent_vecs = embedder.encode([", ".join(v) if v else "unknown" for v in values])
        reps[f"MiniLM({side})"] = ent_vecs[:m]
        reps[f"concatenation ({side}), equal weights"] = concatenate(text_vecs[:m], ent_vecs[:m])
        if fit_rows:
            fits[side] = fit = fit_weight(text_vecs[m:], ent_vecs[m:], fit_labels, weights)
            reps[f"concatenation ({side}), latent weight {fit.weight:g} (fitted on {len(fit_rows)} other posts)"] = \
                concatenate(text_vecs[:m], ent_vecs[:m], fit.weight)
    out = []
    for name, x in reps.items():
        mean, std = v_measure(x, labels)
        out.append(ClusteringRow(representation=name, v_measure=round(mean, 4), v_measure_std=round(std, 4)))
    samples = [{"label": lab, "entities": e, "text": t[:120]} for t, lab, e in list(zip(texts, labels, entities))[:8]]
    if vocabulary:
        for sample, named in zip(samples, sides["latent concepts"]):
            sample["concepts"] = named
    return ClusteringReport(documents=m, labels=len(set(labels)), text_type=text_type,
                            latent_entity_type=latent_entity_type, extraction_seconds=round(seconds, 1), rows=out,
                            samples=samples, fit_documents=len(fit_rows), fits=fits, distinct_values=distinct,
                            concepts=concepts)
