"""The latent-value study and the policy fit, on a small hand-built snapshot whose right answers are known:
what each policy does to a ranking, that cross-validation scores every query by a policy fitted without it,
that the fit is deterministic for a seed, and that the fitted policy maps onto rewriter options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentsearch.lab.latent_study import Evaluator, Policy, Study, cross_validate
from latentsearch.lab.tune_policy import fit, grid, to_latent_policy
from latentsearch.query.policy import LatentPolicy
from latentsearch.query.rewriter import RewriteOptions

N_DOCS = 8


def make_study(tmp_path: Path, n_queries: int = 20, seed: int = 0) -> Study:
    """Queries whose one relevant document (doc q % 8) ranks third by dense and by BM25, and holds the
    question's `field` value; the documents above it hold another value. A latent list can only help."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(N_DOCS)]
    dense = rng.uniform(0.0, 0.5, size=(n_queries, N_DOCS)).astype(np.float32)
    bm25, question, relevant = [], [], {}
    for q in range(n_queries):
        rel = q % N_DOCS
        above = [(rel + 1) % N_DOCS, (rel + 2) % N_DOCS]
        dense[q, above] = [0.9, 0.8]
        dense[q, rel] = 0.7
        bm25.append({docs[above[0]]: 9.0, docs[above[1]]: 8.0, docs[rel]: 7.0})
        relevant[f"q{q}"] = [docs[rel]]
        question.append({"field": [(f"v{rel}", 0.9), ("other", 0.1)]})
    np.save(tmp_path / "dense.npy", dense)
    values = [[f"v{d}"] for d in range(N_DOCS)]
    return Study(index="t", types=["field"], qids=[f"q{q}" for q in range(n_queries)],
                 texts=[f"question {q}" for q in range(n_queries)], relevant=relevant, doc_ids=docs,
                 doc_values={"field": values}, bm25=bm25, bm25_expanded={},
                 question={"free": question, "chosen": question, "chosen+docs": question, "prf": question},
                 dense_path=str(tmp_path / "dense.npy"))


def test_policies_move_the_relevant_document(tmp_path: Path):
    ev = Evaluator(make_study(tmp_path))
    plain = ev.metrics(Policy(base="hybrid"))
    assert plain["ndcg@10"] == pytest.approx(0.5)  # rank 3 everywhere: 1/log2(4)
    for p in (Policy(method="filter", msm=1), Policy(method="rrf3", weight=2.0),
              Policy(method="boost", boost=1.0)):
        m = ev.metrics(p)
        assert m["ndcg@10"] == pytest.approx(1.0), p.label()
        assert m["fired"] == 1.0 and m["relevant_kept"] == 1.0
    # a weak latent list does not overturn two lists that agree
    assert ev.metrics(Policy(method="rrf3", weight=0.02))["ndcg@10"] == pytest.approx(0.5)
    # a confidence floor above every value: the filter never fires and the ranking is the plain one
    high = ev.metrics(Policy(method="filter", msm=1, min_confidence=0.95))
    assert high["fired"] == 0.0 and high["ndcg@10"] == pytest.approx(0.5)
    # top_values=2 adds "other", which no document holds: nothing changes
    assert ev.metrics(Policy(method="filter", top_values=2))["ndcg@10"] == pytest.approx(1.0)


def test_cross_validation_scores_each_query_held_out(tmp_path: Path):
    ev = Evaluator(make_study(tmp_path))
    policies = [Policy(base="hybrid"), Policy(method="rrf3", weight=2.0)]
    cv = cross_validate(ev, policies, folds=4, seed=3)
    assert cv["held_out"]["ndcg@10"] == pytest.approx(1.0)
    assert len(cv["chosen"]) == 4 and set(cv["chosen"]) == {policies[1].label()}


def test_fit_is_deterministic_for_a_seed(tmp_path: Path):
    study = make_study(tmp_path, n_queries=30, seed=1)
    first, again = fit(study, folds=5, seed=7), fit(study, folds=5, seed=7)
    assert first.model_dump_json() == again.model_dump_json()  # NaN-safe equality
    assert first.chosen.promotion == "rrf" and first.held_out["ndcg@10"] > first.baseline["ndcg@10"]
    other = fit(study, folds=5, seed=8)
    assert other.chosen.options() == first.chosen.options()  # the policy chosen on all queries does not depend on the folds


def test_fitted_policy_maps_onto_rewriter_options():
    for p in grid(["a", "b"]):
        lp = to_latent_policy(p, "hybrid")
        opts = RewriteOptions(**lp.options())  # every policy the fit can choose is a valid option set
        assert opts.strictness == ("none" if p.method == "none" else p.msm)
    with pytest.raises(ValueError, match="only rrf and none"):
        to_latent_policy(Policy(method="boost"), "hybrid")
    assert LatentPolicy.model_validate_json(LatentPolicy(types=["a"]).model_dump_json()).types == ["a"]
