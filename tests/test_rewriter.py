"""The query rewriter on a real embedded index: SciFact sample abstracts enriched by the real LentEx
extractor (titles, one latent type), questions rewritten into filtered k-NN, every DSL checked
against the OpenSearch spec, and the retrieval evaluation on real judgements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentsearch.backends import open_backend
from latentsearch.config import Settings
from latentsearch.query.rewriter import (
    EntityMapping,
    QueryRewriter,
    RewriteOptions,
    ladder,
    latent_filter,
    normalise,
)
from latentsearch.query.search import build_body

N_DOCS = 12
INDEX = "rw"


@pytest.fixture(scope="module")
def spec():
    from tests.oracles.opensearch_spec import SpecNotFound, load_validator

    try:
        return load_validator()
    except SpecNotFound as exc:
        pytest.fail(f"the DSL oracle needs the OpenSearch API spec: {exc}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An embedded index with latent `research_field` values read from titles (real extractor)."""
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.samples import SAMPLE_CORPUS

    root = tmp_path_factory.mktemp("rewriter")
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTSEARCH_HOME", str(root / "home"))
    mp.delenv("LATENTSEARCH_CONFIG", raising=False)
    settings = Settings(
        index=INDEX,
        entities={"text_type": "biomedical article title", "latent_types": [
            {"name": "research_field", "description": "research field"}]},
        ingest={"latent_input": "title", "extract_batch_size": 8},
    )
    report = ingest(SAMPLE_CORPUS, settings, limit=N_DOCS, progress=False)
    assert report.records_read == N_DOCS and report.rejected == 0
    docs = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()[:N_DOCS]]
    backend = open_backend(settings.backend)
    yield {"settings": settings, "backend": backend, "docs": docs, "root": root}
    backend.close()
    mp.undo()


@pytest.fixture(scope="module")
def rewriter(corpus, embedder):
    from latentsearch.models.factory import get_extractor

    return QueryRewriter(corpus["backend"], INDEX, embedder, get_extractor())


class CountingBackend:
    """The real backend, counting round trips (the ladder must be one msearch)."""

    def __init__(self, inner):
        self.inner, self.msearch_calls, self.search_calls = inner, 0, 0

    def msearch(self, index, bodies):
        self.msearch_calls += 1
        return self.inner.msearch(index, bodies)

    def search(self, index, body, **kw):
        self.search_calls += 1
        return self.inner.search(index, body, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_options_validate_strictness():
    assert RewriteOptions(strictness="60%").strictness == "60%"
    assert RewriteOptions(strictness="2").strictness == 2
    for bad in ("sometimes", 0, True, "150%", -2):
        with pytest.raises(ValueError, match="strictness"):
            RewriteOptions(strictness=bad)


def test_ladder_levels():
    assert ladder("auto", 3) == [3, 2, 1, None]
    assert ladder("strict", 3) == [3, None]
    assert ladder("loose", 3) == [1, None]
    assert ladder(5, 2) == [2, None]  # clamped to the entity count
    assert ladder("60%", 3) == [1, None]  # Lucene: floor(3 * 0.6) = 1
    assert ladder("-1", 3) == [2, None]
    assert ladder("auto", 0) == [None]
    assert ladder("none", 4) == [None]


def test_normalise_meets_variants():
    assert normalise("T-Cells") == normalise("t cell")
    assert normalise("Neuroscience.") == "neuroscience"


def test_filter_dsl_is_spec_valid_inside_knn(spec):
    maps = [EntityMapping(type="disease", extracted="mi", values=["myocardial infarction", "heart attack"]),
            EntityMapping(type="chemical", extracted="statin", values=["statins"])]
    user = {"term": {"metadata.year": 2020}}
    for msm in (2, 1):
        flt = latent_filter(maps, msm, user)
        assert flt["bool"]["minimum_should_match"] == msm
        assert flt["bool"]["filter"] == [user]
        for mode in ("dense", "hybrid"):
            body = build_body("q", mode=mode, k=10, vector=[0.1] * 384, filter=flt)
            knn = body["query"]["knn"] if mode == "dense" else body["query"]["hybrid"]["queries"][1]["knn"]
            assert knn["vector"]["filter"] == flt  # efficient filtering, never post_filter
            assert "post_filter" not in body
            assert spec.validate_request_body("search", body) == []
    assert latent_filter(maps, None, user) == user
    assert latent_filter([], 2, None) is None


def test_vocabulary_is_the_index_values(corpus, rewriter):
    rewriter.vocabulary.load(["research_field"])
    values = rewriter.vocabulary.values("research_field")
    src = [h["_source"]["latent"].get("research_field", []) for h in corpus["backend"].search(
        INDEX, {"size": 100, "query": {"match_all": {}}})["hits"]["hits"]]
    assert values and set(values) == {v for row in src for v in row}


def test_title_question_is_filtered_to_its_own_field(corpus, rewriter):
    """A document's own title as the question: the extractor gives the same field, which maps
    exactly, and the strict level keeps that document on top."""
    doc = corpus["docs"][5]
    found = rewriter.search(doc["title"], k=5, strictness="strict", min_hits=1)
    ex = found.explanation
    assert ex.entities, ex
    assert any(h == "exact" for m in ex.entities for h in m.how.values())
    assert ex.chosen_msm == len(ex.entities)
    assert found.hits[0].doc_id == doc["_id"]
    first = found.hits[0].latent.get("research_field", [])
    assert set(first) & {v for m in ex.entities for v in m.values}
    assert "filter" in json.dumps(ex.dsl["query"]["knn"])


def test_every_strictness_emits_spec_valid_msearch(corpus, embedder, spec):
    """The bodies the rewriter sends, captured from the real call, validate as an _msearch."""
    from latentsearch.models.factory import get_extractor

    sent: list = []

    class Capture(CountingBackend):
        def msearch(self, index, bodies):
            sent.append(list(bodies))
            return super().msearch(index, bodies)

    rw = QueryRewriter(Capture(corpus["backend"]), INDEX, embedder, get_extractor())
    for strictness in ("auto", "strict", "loose", "none", 1, "50%"):
        rw.search(corpus["docs"][6]["title"], k=5, strictness=strictness)
    assert len(sent) == 6 and any(len(b) > 1 for b in sent)
    for bodies in sent:
        lines = [line for body in bodies for line in ({"index": INDEX}, body)]
        assert spec.validate_msearch(lines) == []
    vocab = {"size": 0, "query": {"match_all": {}}, "aggs": {"t": {"terms": {"field": "latent.research_field",
                                                                              "size": 20000}}}}
    assert spec.validate_request_body("search", vocab) == []


def test_auto_runs_the_ladder_in_one_msearch(corpus, embedder):
    from latentsearch.models.factory import get_extractor

    counting = CountingBackend(corpus["backend"])
    rw = QueryRewriter(counting, INDEX, embedder, get_extractor())
    question = corpus["docs"][3]["title"]
    found = rw.search(question, k=10, strictness="auto", min_hits=1)
    assert counting.msearch_calls == 1
    levels = [lv.msm for lv in found.explanation.levels]
    assert levels[-1] is None and levels[:-1] == sorted(levels[:-1], reverse=True)
    # stricter levels never have more hits than looser ones (a filter only removes documents)
    hits = [lv.hits for lv in found.explanation.levels]
    assert hits == sorted(hits)
    # backfill: the list is as long as the unfiltered one, each document once
    assert len(found.hits) == min(10, N_DOCS)
    assert len({h.doc_id for h in found.hits}) == len(found.hits)


def test_auto_falls_back_to_no_filter_when_levels_are_too_thin(corpus, rewriter):
    found = rewriter.search(corpus["docs"][7]["title"], k=10, strictness="auto", min_hits=N_DOCS + 1)
    assert found.explanation.chosen_msm is None
    assert "unfiltered" in found.explanation.reason


def test_strictness_none_and_no_extractor_are_plain_dense(corpus, embedder, rewriter):
    from latentsearch.query.search import search

    q = "myelin basic protein transcription"
    plain = search(q, backend=corpus["backend"], index=INDEX, embedder=embedder, k=5)
    none = rewriter.search(q, k=5, strictness="none")
    bare = QueryRewriter(corpus["backend"], INDEX, embedder, extractor=None).search(q, k=5)
    assert [h.doc_id for h in none.hits] == [h.doc_id for h in plain.hits] == [h.doc_id for h in bare.hits]
    assert none.explanation.chosen_msm is None and not none.explanation.entities


def test_hybrid_with_user_filter(corpus, rewriter):
    keep = [d["_id"] for d in corpus["docs"][:6]]
    found = rewriter.search(corpus["docs"][2]["title"], k=8, mode="hybrid", strictness="loose",
                            filter={"terms": {"doc_id": keep}})
    assert found.hits and all(h.doc_id in keep for h in found.hits)
    assert "hybrid" in found.explanation.dsl["query"]


def test_unknown_entities_are_reported_not_filtered(corpus, embedder):
    class FixedExtractor:  # the question's entities, fixed: tests the mapping, not the LLM
        fingerprint = "fixed"

        def extract(self, texts, text_type, latent_entity_type, options=None):
            return [["zzqx-unknown-field"] for _ in texts]

    rw = QueryRewriter(corpus["backend"], INDEX, embedder, FixedExtractor())
    found = rw.search("anything at all", k=3, map_top_n=0)
    assert found.explanation.unmapped and not found.explanation.entities
    assert found.explanation.chosen_msm is None
    assert "no extracted entity exists in the index" in found.explanation.reason


def test_async_search_matches_sync(corpus, rewriter):
    import asyncio

    q = corpus["docs"][1]["title"]
    a = asyncio.run(rewriter.asearch(q, k=5))
    s = rewriter.search(q, k=5)
    assert [h.doc_id for h in a.hits] == [h.doc_id for h in s.hits]


def test_eval_retrieval_on_judged_slice(corpus, embedder, tmp_path: Path):
    """Queries = sample titles judged against their own document: every variant runs, metrics are
    real (dense must find most titles' own abstracts), TREC runs are written."""
    from latentsearch.lab.eval_retrieval import evaluate_retrieval
    from latentsearch.models.factory import get_extractor

    docs = corpus["docs"][:8]
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": d["title"]}) + "\n" for i, d in enumerate(docs)))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d['_id']}\t1\n" for i, d in enumerate(docs)))
    report = evaluate_retrieval(
        backend=corpus["backend"], index=INDEX, embedder=embedder, extractor=get_extractor(), queries_path=queries,
        qrels_path=qrels, run_dir=tmp_path / "runs", progress=False,
    )
    by = {r.variant: r for r in report.results}
    assert set(by) == {"bm25", "dense", "hybrid", "dense+latent:auto", "dense+latent:strict", "hybrid+latent:auto"}
    assert by["dense"].metrics["mrr@10"] > 0.8 and by["bm25"].metrics["recall@100"] == 1.0
    assert all(0 <= v <= 1 for r in report.results for v in r.metrics.values())
    assert len(list((tmp_path / "runs").glob("*.trec"))) == 6
    assert {d.variant for d in report.diagnostics} == {"dense+latent:auto", "dense+latent:strict", "hybrid+latent:auto"}
    strict = next(d for d in report.diagnostics if d.variant == "dense+latent:strict")
    assert strict.relevant_kept is not None and 0 <= strict.relevant_kept <= 1


def test_cli_search_explain(corpus, monkeypatch):
    from typer.testing import CliRunner

    from latentsearch.cli import app

    monkeypatch.setenv("LATENTSEARCH_HOME", str(corpus["root"] / "home"))
    res = CliRunner().invoke(app, ["search", corpus["docs"][4]["title"], "--index", INDEX, "--explain", "-k", "3"])
    assert res.exit_code == 0, res.output
    assert "minimum_should_match" in res.output and "why:" in res.output
    res = CliRunner().invoke(app, ["search", "x", "--index", INDEX, "--strictness", "sometimes"])
    assert res.exit_code != 0 and "strictness" in res.output


def test_chosen_entities_are_always_index_values(corpus, rewriter):
    """Property: whatever the question, `entities="chosen"` maps only onto values the index holds, with a
    confidence per value; the confidences of one type's candidates are a distribution."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    rewriter.vocabulary.load(["research_field"])
    held = set(rewriter.vocabulary.values("research_field"))
    questions = st.sampled_from([d["title"] for d in corpus["docs"]] + [
        "Statins lower the risk of myocardial infarction.", "Zebrafish fins regenerate.", "x", "42 %"])

    @settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(question=questions, n=st.integers(1, 6), keep=st.integers(1, 3))
    def check(question: str, n: int, keep: int) -> None:
        opts = RewriteOptions(entities="chosen", candidates=n, values_per_type=keep, min_confidence=0.0)
        import numpy as np

        vector = np.asarray(rewriter.embedder.encode([question])[0], dtype=np.float32)
        mapped, unmapped = rewriter.choose_entities(question, vector, ["research_field"], opts)
        assert not unmapped and 1 <= len(mapped) <= min(n, keep)
        for m in mapped:
            assert set(m.values) <= held and m.extracted in held
            assert all(h.startswith("chosen:") for h in m.how.values())

    check()


def test_chosen_entities_below_confidence_give_no_clause(corpus, rewriter):
    doc = corpus["docs"][3]
    found = rewriter.search(doc["title"], k=5, entities="chosen", min_confidence=1.0, strictness="strict")
    ex = found.explanation
    assert not ex.entities and ex.unmapped and ex.chosen_msm is None
    found = rewriter.search(doc["title"], k=5, entities="chosen", min_confidence=0.0, strictness="strict",
                            min_hits=1)
    assert found.explanation.entities and found.explanation.chosen_msm == 1
    assert found.hits[0].latent.get("research_field")


def test_rrf_fuse_is_weighted_reciprocal_rank():
    from latentsearch.query.rewriter import rrf_fuse
    from latentsearch.query.search import Hit

    def hits(*ids):
        return [Hit(id=f"{d}#0", doc_id=d, chunk=0, score=1.0, text="") for d in ids]

    fused = rrf_fuse([hits("a", "b", "c"), hits("c", "d")], [1.0, 2.0], k=3, rank_constant=20)
    assert [h.doc_id for h in fused] == ["c", "d", "a"]  # c: 1/23 + 2/21; d: 2/22; a: 1/21
    assert fused[0].score == round(1 / 23 + 2 / 21, 6)
    assert [h.doc_id for h in rrf_fuse([hits("a", "b"), hits("b")], [1.0, 0.0], k=5)] == ["a", "b"]


def test_rrf_promotion_weights_the_filtered_list(corpus, rewriter):
    """promotion=rrf: weight 0 leaves the unfiltered ranking as it is; a large weight puts the filtered
    documents first; hybrid fuses BM25 too, from the same round trip."""
    doc = corpus["docs"][5]
    plain = rewriter.search(doc["title"], k=8, strictness="none")
    common = {"k": 8, "strictness": "strict", "min_hits": 1, "promotion": "rrf"}
    same = rewriter.search(doc["title"], latent_weight=0.0, **common)
    assert same.explanation.chosen_msm is not None
    assert [h.doc_id for h in same.hits] == [h.doc_id for h in plain.hits]
    strong = rewriter.search(doc["title"], latent_weight=50.0, **common)
    wanted = {v for m in strong.explanation.entities for v in m.values}
    passing = [bool(set(h.latent.get("research_field", [])) & wanted) for h in strong.hits]
    assert passing[0] and passing == sorted(passing, reverse=True)  # every filtered document before the rest
    hybrid = rewriter.search(doc["title"], mode="hybrid", latent_weight=1.0, **common)
    assert hybrid.hits and hybrid.hits[0].doc_id == doc["_id"]


def test_types_option_restricts_and_rejects_unknown(corpus, rewriter):
    with pytest.raises(ValueError, match="unknown latent types"):
        rewriter.search("a question", types=["nope"])
    found = rewriter.search(corpus["docs"][2]["title"], types=[], strictness="strict")
    assert not found.explanation.entities


def test_tune_strictness_stores_a_policy_that_auto_uses(corpus, rewriter, tmp_path: Path, monkeypatch):
    """`tune strictness` on judged queries (each document's title finds that document) fits, stores the policy
    with the index, and `auto` then runs it (the explanation says so); an explicit strictness still wins."""
    from typer.testing import CliRunner

    from latentsearch.cli import app
    from latentsearch.query.policy import delete_policy, load_policy

    docs = corpus["docs"][:10]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"_id": d["_id"], "text": d["title"]}) + "\n" for d in docs))
    (tmp_path / "qrels.tsv").write_text("".join(f"{d['_id']}\t{d['_id']}\t1\n" for d in docs))
    monkeypatch.setenv("LATENTSEARCH_HOME", str(corpus["root"] / "home"))
    args = ["tune", "strictness", "--index", INDEX, "--queries", str(tmp_path / "q.jsonl"), "--qrels",
            str(tmp_path / "qrels.tsv"), "--folds", "2", "--work", str(tmp_path / "study"), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["queries"] == 10 and len(report["fold_choices"]) == 2
    stored = load_policy(corpus["backend"], INDEX)
    assert stored is not None and stored.model_dump() == report["chosen"]
    again = CliRunner().invoke(app, args)  # the saved study is reused: the same fit
    assert again.exit_code == 0 and json.loads(again.stdout) == report
    try:
        rw = QueryRewriter(corpus["backend"], INDEX, rewriter.embedder, rewriter.extractor)
        opts, policy = rw.options(strictness="auto", k=5)
        assert policy is not None and opts.promotion == stored.promotion
        assert "fitted policy" in rw.search(docs[0]["title"], k=5).explanation.reason
        opts, policy = rw.options(strictness="strict", k=5)
        assert policy is None and opts.strictness == "strict" and opts.promotion == "boost"
    finally:
        assert delete_policy(corpus["backend"], INDEX)
    assert load_policy(corpus["backend"], INDEX) is None


def test_free_entities_with_and_without_draft_hints_are_the_same(corpus, rewriter):
    """The rewriter hands the extractor the index values nearest the question as draft answers (`hints`): they
    make decoding cheaper and must not change which entities the question gets."""
    questions = [d["title"] for d in corpus["docs"][:4]] + ["Statins lower the risk of myocardial infarction."]
    for q in questions:
        rewriter._cache.clear()
        drafted = rewriter.search(q, k=5, entities="free", strictness="loose").explanation
        rewriter._cache.clear()
        plain = rewriter.search(q, k=5, entities="free", strictness="loose", hints=0).explanation
        assert [(m.type, m.extracted) for m in drafted.entities + drafted.unmapped] == \
               [(m.type, m.extracted) for m in plain.entities + plain.unmapped], q
