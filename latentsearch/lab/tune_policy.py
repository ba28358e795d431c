"""`latentsearch tune strictness`: fit how the latent filter is used to one corpus, from judged queries.

The grid holds only policies the rewriter runs exactly as the study scores them (`promotion="rrf"`: the unfiltered
k-NN list, BM25's in hybrid, and the filtered k-NN list fused by reciprocal rank, the filtered list weighted), plus
"no latent filter". Which types, where the question's values come from (free extraction or chosen among the index's
values), their confidence floor and count, and the filtered list's weight are fitted by k-fold cross-validation on
nDCG@10; the policy chosen on all queries is stored with the index and becomes the rewriter's default there.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from latentsearch.lab.latent_study import Evaluator, Policy, Study, collect, cross_validate, load_study
from latentsearch.query.policy import LatentPolicy

WEIGHTS = (0.25, 0.5, 1.0, 2.0)
CONFIDENCES = (0.0, 0.3, 0.5, 0.7)


class TuneReport(BaseModel):
    index: str
    queries: int
    folds: int
    seed: int
    baseline: dict[str, float] = Field(description="The unfiltered ranking (hybrid or dense) on all queries")
    held_out: dict[str, float] = Field(description="Cross-validated figures of the fitted policy")
    fold_choices: list[str]
    chosen: LatentPolicy
    chosen_on_all: dict[str, float] = Field(description="The chosen policy on all queries (optimistic)")


def grid(types: list[str], base: str = "hybrid") -> list[Policy]:
    """Every policy the fit considers: per type subset, value source, confidence, count and weight."""
    subsets = [None] + ([[t] for t in types] if len(types) > 1 else [])
    out = [Policy(base=base)]
    for ts, w, v in itertools.product(subsets, WEIGHTS, (1, 2)):
        out.append(Policy(method="rrf3", base=base, source="free", types=ts, weight=w, top_values=v))
        out += [Policy(method="rrf3", base=base, source="chosen", types=ts, weight=w, top_values=v, min_confidence=c)
                for c in CONFIDENCES]
    return out


def to_latent_policy(p: Policy, base: str) -> LatentPolicy:
    """The rewriter options that run `p` exactly."""
    if p.method == "none":
        return LatentPolicy(mode=base, strictness="none")
    if p.method != "rrf3":
        raise ValueError(f"only rrf and none policies map onto the rewriter exactly, not {p.method}")
    return LatentPolicy(mode=base, strictness=p.msm, promotion="rrf", latent_weight=p.weight, types=p.types,
                        entities="free" if p.source == "free" else "chosen", min_confidence=p.min_confidence,
                        values_per_type=p.top_values)


def fit(study: Study, *, folds: int = 5, seed: int = 13, base: str = "hybrid") -> TuneReport:
    """Cross-validated fit over `grid`; deterministic for a seed."""
    ev = Evaluator(study)
    policies = grid(study.types, base)
    cv = cross_validate(ev, policies, folds=folds, seed=seed)
    best = max(policies, key=lambda p: (ev.metrics(p)["ndcg@10"], -policies.index(p)))
    return TuneReport(
        index=study.index, queries=len(study.qids), folds=folds, seed=seed,
        baseline={k: round(v, 4) for k, v in ev.metrics(Policy(base=base)).items()},
        held_out={k: round(v, 4) for k, v in cv["held_out"].items()}, fold_choices=cv["chosen"],
        chosen=to_latent_policy(best, base).model_copy(update={"fitted": {
            "queries": len(study.qids), "folds": folds, "seed": seed,
            "held_out_ndcg@10": round(cv["held_out"]["ndcg@10"], 4),
            "baseline_ndcg@10": round(ev.metrics(Policy(base=base))["ndcg@10"], 4)}}),
        chosen_on_all={k: round(v, 4) for k, v in ev.metrics(best).items()},
    )


def tune(backend, index: str, embedder, extractor, queries: dict[str, str], qrels: dict[str, dict[str, int]],
         work: Path, *, folds: int = 5, seed: int = 13, base: str = "hybrid", progress: bool = True,
         schema: Any = None) -> TuneReport:
    """Collect the study for `index` into `work` (or reuse the one there, when it was collected for this index
    and these queries: collecting is the slow part) and fit."""
    study = None
    if (work / "study.json").is_file():
        saved = load_study(work)
        if saved.index == index and saved.qids == list(queries) and saved.types == schema.type_names:
            study = saved
    if study is None:
        study = collect(backend, index, embedder, extractor, queries, qrels, work, types=schema.type_names,
                        query_text_type=schema.query_text_type or schema.text_type, progress=progress)
    return fit(study, folds=folds, seed=seed, base=base)
