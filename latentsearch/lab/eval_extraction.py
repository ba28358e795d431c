"""`latentsearch eval extraction`: the paper's metric on the synthetic test splits.

Mean semantic similarity (cosine of all-mpnet-base-v2 embeddings) between each prediction and its
reference, on seen-domain and unseen-domain test sets, for: the base LLM with the same prompts,
the LoRA-tuned LLM, and a cheap non-LLM baseline (the training label of the same entity type whose
MiniLM embedding is nearest to the text's; all training labels when the type is unseen).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from latentsearch.lab.lentex_data import DATA_DIR, Example, load_split

SPLITS = ("test_seen", "test_unseen")


class MethodScore(BaseModel):
    method: str
    split: str
    n: int
    similarity: float  # mean cosine, 0..1 (×100 in the table)
    empty: int
    seconds: float


class ExtractionReport(BaseModel):
    similarity_model: str
    rows: list[MethodScore]
    samples: dict[str, list[dict[str, Any]]]


def nearest_label_baseline(train: Sequence[Example], embed: Callable[[list[str]], np.ndarray]) -> Callable:
    """Predict, for each test text, the training label (same entity type) nearest in embedding space."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for ex in train:
        if ex.label not in by_type[ex.latent_entity_type]:
            by_type[ex.latent_entity_type].append(ex.label)
    all_labels = sorted({ex.label for ex in train})
    cache: dict[str, tuple[list[str], np.ndarray]] = {}

    def predict(examples: Sequence[Example]) -> list[str]:
        text_vecs = embed([ex.text for ex in examples])
        out = []
        for ex, vec in zip(examples, text_vecs):
            key = ex.latent_entity_type if ex.latent_entity_type in by_type else "*"
            if key not in cache:
                labels = by_type.get(key, all_labels)
                cache[key] = (labels, embed(labels))
            labels, lab_vecs = cache[key]
            out.append(labels[int(np.argmax(lab_vecs @ vec))])
        return out

    return predict


def evaluate(
    *,
    methods: Sequence[str] = ("nearest-label", "base", "lentex"),
    data_dir: Path = DATA_DIR,
    adapter: str | Path | None = "default",
    model: str = "SmolLM2-135M-Instruct",
    similarity_model: str = "all-mpnet-base-v2",
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ExtractionReport:
    from latentsearch.models.extractor import LatentEntityExtractor
    from latentsearch.models.factory import get_embedder

    sim = get_embedder(similarity_model)
    minilm = get_embedder("all-MiniLM-L6-v2")
    train = load_split("train", data_dir)
    tests = {s: load_split(s, data_dir) for s in SPLITS}
    if limit:
        rng = np.random.default_rng(seed)
        tests = {s: [ex[i] for i in sorted(rng.choice(len(ex), min(limit, len(ex)), replace=False))]
                 for s, ex in tests.items()}

    predictors: dict[str, Callable[[Sequence[Example]], list[str]]] = {}
    for method in methods:
        if method == "nearest-label":
            predictors[method] = nearest_label_baseline(train, lambda texts: minilm.encode(list(texts)))
        elif method in ("base", "lentex"):
            ext = LatentEntityExtractor(model, adapter=None if method == "base" else adapter, batch_size=batch_size)
            if method == "lentex" and ext.adapter is None:
                raise FileNotFoundError("no LoRA adapter found: train one with `latentsearch train extractor`")
            predictors[method] = _llm_predictor(ext)
        else:
            raise ValueError(f"unknown method {method!r}: use nearest-label, base, lentex")

    rows: list[MethodScore] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    for method, predict in predictors.items():
        for split_name, examples in tests.items():
            if progress:
                progress(f"{method} on {split_name} ({len(examples)} examples)")
            started = time.perf_counter()
            preds = predict(examples)
            seconds = time.perf_counter() - started
            score, empty = similarity(sim, preds, [ex.label for ex in examples])
            rows.append(MethodScore(method=method, split=split_name, n=len(examples), similarity=round(score, 4),
                                    empty=empty, seconds=round(seconds, 1)))
            samples[f"{method}/{split_name}"] = [
                {"text": ex.text[:160], "domain": ex.domain, "reference": ex.label, "prediction": p}
                for ex, p in list(zip(examples, preds))[:5]
            ]
    return ExtractionReport(similarity_model=similarity_model, rows=rows, samples=samples)


def _llm_predictor(ext: Any) -> Callable[[Sequence[Example]], list[str]]:
    def predict(examples: Sequence[Example]) -> list[str]:
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, ex in enumerate(examples):
            groups[(ex.text_type, ex.latent_entity_type)].append(i)
        out = [""] * len(examples)
        for (text_type, entity_type), idx in groups.items():
            values = ext.extract([examples[i].text for i in idx], text_type, entity_type)
            for i, v in zip(idx, values):
                out[i] = ", ".join(v)
        return out

    return predict


def similarity(sim: Any, predictions: Sequence[str], references: Sequence[str]) -> tuple[float, int]:
    """Mean cosine between prediction and reference embeddings; an empty prediction scores 0."""
    empty = sum(1 for p in predictions if not p.strip())
    if not predictions:
        return 0.0, 0
    p = sim.encode([x or " " for x in predictions])
    r = sim.encode(list(references))
    cos = np.sum(p * r, axis=1)
    cos = np.where([bool(x.strip()) for x in predictions], cos, 0.0)
    return float(np.mean(cos)), empty


def table(report: ExtractionReport) -> str:
    """The paper-style table: mean semantic similarity (%) per method, seen vs unseen domains."""
    by = {(r.method, r.split): r for r in report.rows}
    methods = list(dict.fromkeys(r.method for r in report.rows))
    lines = [f"{'method':<16} {'seen domains':>14} {'unseen domains':>16}   (mean cosine ×100, {report.similarity_model})"]
    for m in methods:
        seen, unseen = by.get((m, "test_seen")), by.get((m, "test_unseen"))
        fmt = lambda r: f"{100 * r.similarity:6.1f} (n={r.n})" if r else "-"  # noqa: E731
        lines.append(f"{m:<16} {fmt(seen):>14} {fmt(unseen):>16}")
    return "\n".join(lines)
