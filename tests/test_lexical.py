"""Lexical search at the field's standard (issue 15): the embedded engine's `english` analysis gives
OpenSearch's tokens, its BM25 equals Lucene's formula, the mapping and the search bodies use them, and
hybrid fusion is one default that `--fusion`/`--weights` override everywhere.

Until the real OpenSearch node runs in CI, the expected tokens come from the analyzer's documented
behaviour (Lucene EnglishAnalyzer: StandardTokenizer, EnglishPossessiveFilter, LowerCaseFilter,
StopFilter with ENGLISH_STOP_WORDS_SET, PorterStemFilter); the Porter pairs are the examples of
Porter (1980) and the reference implementation Lucene ports."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from latentsearch import dsl
from latentsearch.backends.base import BulkAction, UnsupportedQueryError
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.backends.embedded.analysis import ENGLISH_STOP_WORDS, analyze, porter_stem
from latentsearch.backends.embedded.layout import MapperParsingError
from latentsearch.backends.embedded.snapshot import lucene_length
from latentsearch.config import EntitySchema, Settings, TextConfig, load_settings
from latentsearch.mappings import LEXICAL_FIELD, opensearch_index_body
from latentsearch.query.search import DEFAULT_FUSION, DEFAULT_WEIGHTS, RRF_RANK_CONSTANT, build_body

# ---------------------------------------------------------------- analysis

# (sentence, OpenSearch `english` analyzer tokens)
ENGLISH_CASES = [
    ("The quick brown foxes jumped over the lazy dogs.", ["quick", "brown", "fox", "jump", "over", "lazi", "dog"]),
    # possessive 's is removed before lowercasing (also with ’); a trailing ' is not part of the token
    ("John's dog's bone", ["john", "dog", "bone"]),
    ("Alzheimer’s disease patients' outcomes", ["alzheim", "diseas", "patient", "outcom"]),
    # Lucene's English stop set: a an and are as at be but by for if in into is it no not of on or such
    # that the their then there these they this to was will with
    ("This is not a test of it, and no one will be there.", ["test", "on"]),
    # UAX #29: hyphens split, decimals and thousands stay whole, apostrophes inside words stay
    ("COVID-19 vaccines reduced hospitalization by 95.5% in 1,000 adults (p<0.05).",
     ["covid", "19", "vaccin", "reduc", "hospit", "95.5", "1,000", "adult", "p", "0.05"]),
    ("Isn't it TNF-α?", ["isn't", "tnf", "α"]),
    # Lucene's Porter (the reference version): -logi -> -log, -bli -> -ble, 2-letter words untouched
    ("Running runners ran easily; generalization of archaeology is possibly us",
     ["run", "runner", "ran", "easili", "gener", "archaeolog", "possibl", "us"]),
]

# Porter (1980) examples, as the reference implementation (and Lucene's PorterStemmer) stems them
PORTER = {
    "caresses": "caress", "ponies": "poni", "ties": "ti", "caress": "caress", "cats": "cat", "feed": "feed",
    "agreed": "agre", "plastered": "plaster", "bled": "bled", "motoring": "motor", "sing": "sing",
    "conflated": "conflat", "troubled": "troubl", "sized": "size", "hopping": "hop", "tanned": "tan",
    "falling": "fall", "hissing": "hiss", "fizzed": "fizz", "failing": "fail", "filing": "file", "happy": "happi",
    "sky": "sky", "relational": "relat", "conditional": "condit", "rational": "ration", "valenci": "valenc",
    "hesitanci": "hesit", "digitizer": "digit", "conformabli": "conform", "radicalli": "radic",
    "differentli": "differ", "vileli": "vile", "analogousli": "analog", "vietnamization": "vietnam",
    "predication": "predic", "operator": "oper", "feudalism": "feudal", "decisiveness": "decis",
    "hopefulness": "hope", "callousness": "callous", "formaliti": "formal", "sensitiviti": "sensit",
    "sensibiliti": "sensibl", "triplicate": "triplic", "formative": "form", "formalize": "formal",
    "electriciti": "electr", "electrical": "electr", "hopeful": "hope", "goodness": "good", "revival": "reviv",
    "allowance": "allow", "inference": "infer", "airliner": "airlin", "gyroscopic": "gyroscop",
    "adjustable": "adjust", "defensible": "defens", "irritant": "irrit", "replacement": "replac",
    "adjustment": "adjust", "dependent": "depend", "adoption": "adopt", "homologou": "homolog",
    "communism": "commun", "activate": "activ", "angulariti": "angular", "homologous": "homolog",
    "effective": "effect", "bowdlerize": "bowdler", "probate": "probat", "rate": "rate", "cease": "ceas",
    "controll": "control", "roll": "roll",
    # where PyStemmer's Snowball `porter` (the published algorithm) differs from Lucene
    "technology": "technolog", "is": "is", "as": "as",
}


@pytest.mark.parametrize(("text", "tokens"), ENGLISH_CASES)
def test_english_analyzer_tokens_match_opensearch(text: str, tokens: list[str]) -> None:
    assert analyze(text, "english") == tokens


def test_porter_stemmer_is_lucenes() -> None:
    assert {w: porter_stem(w) for w in PORTER} == PORTER


def test_english_stop_words_are_lucenes_set() -> None:
    assert len(ENGLISH_STOP_WORDS) == 33
    assert {"a", "not", "no", "with", "their", "such"} <= ENGLISH_STOP_WORDS and "one" not in ENGLISH_STOP_WORDS


def test_standard_analyzer_lowercases_without_stop_words_or_stemming() -> None:
    assert analyze("The Cats' U.S. e-mail at 3.5 kg") == ["the", "cats", "u.s", "e", "mail", "at", "3.5", "kg"]


# ---------------------------------------------------------------- BM25


def test_norm_byte_lengths_are_lucenes() -> None:
    # SmallFloat.intToByte4 / byte4ToInt: exact below 24, then 4 significant bits
    lengths = np.array([0, 1, 23, 24, 31, 32, 40, 41, 100, 1000])
    assert lucene_length(lengths).tolist() == [0, 1, 23, 24, 31, 32, 40, 40, 96, 984]


def _bm25_index(tmp_path: Path) -> EmbeddedBackend:
    backend = EmbeddedBackend(tmp_path)
    backend.create_index("bm25", {"mappings": {"properties": {"body": {"type": "text", "analyzer": "english"}}}})
    docs = {"a": "The cats sat on the mat", "b": "A cat and a dog", "c": "Dogs chase cats and cats chase mice"}
    assert all(r.ok for r in backend.bulk("bm25", [BulkAction(i, {"body": t}) for i, t in docs.items()]))
    return backend


def _scores(backend: EmbeddedBackend, query: str) -> dict[str, float]:
    hits = backend.search("bm25", {"query": {"match": {"body": query}}})["hits"]["hits"]
    return {h["_id"]: h["_score"] for h in hits}


def test_bm25_equals_lucenes_formula_by_hand(tmp_path: Path) -> None:
    """english tokens: a = cat sat mat (3), b = cat dog (2), c = dog chase cat cat chase mice (6);
    N = 3, avgdl = 11/3, k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5)/(n + 0.5)), no (k1 + 1) factor."""
    backend = _bm25_index(tmp_path)
    avgdl = 11 / 3

    def tf_part(tf: int, dl: int) -> float:
        return tf / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))

    idf_cat, idf_dog = math.log(1 + 0.5 / 3.5), math.log(1 + 1.5 / 2.5)
    assert _scores(backend, "cat") == pytest.approx(
        {"a": idf_cat * tf_part(1, 3), "b": idf_cat * tf_part(1, 2), "c": idf_cat * tf_part(2, 6)}, rel=1e-6)
    # the query is analysed like the field: "Dogs" -> dog, "the" is a stop word
    assert _scores(backend, "the Dogs") == pytest.approx(
        {"b": idf_dog * tf_part(1, 2), "c": idf_dog * tf_part(1, 6)}, rel=1e-6)
    both = _scores(backend, "cats and dogs")
    assert both["c"] == pytest.approx(idf_cat * tf_part(2, 6) + idf_dog * tf_part(1, 6), rel=1e-6)
    assert list(both) == ["b", "c", "a"]  # b: both terms in 2 tokens (0.337) beats c (0.240)


def test_bm25_matches_bm25s_lucene_variant(tmp_path: Path) -> None:
    """An independent implementation (bm25s, method="lucene") on the same tokens gives the same scores."""
    bm25s = pytest.importorskip("bm25s")
    backend = _bm25_index(tmp_path)
    corpus = {"a": "The cats sat on the mat", "b": "A cat and a dog", "c": "Dogs chase cats and cats chase mice"}
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index([analyze(t, "english") for t in corpus.values()], show_progress=False)
    for query in ("cat", "dog chase", "mice and mats"):
        expected = retriever.get_scores(analyze(query, "english"))
        got = _scores(backend, query)
        assert [got.get(i, 0.0) for i in corpus] == pytest.approx(expected.tolist(), rel=1e-5)


# ---------------------------------------------------------------- mapping and bodies


def test_default_mapping_is_english_with_a_content_copy_field() -> None:
    props = opensearch_index_body(EntitySchema(), dimension=4)["mappings"]["properties"]
    assert props["title"]["analyzer"] == props["text"]["analyzer"] == props[LEXICAL_FIELD]["analyzer"] == "english"
    assert props["title"]["copy_to"] == props["text"]["copy_to"] == LEXICAL_FIELD
    std = opensearch_index_body(EntitySchema(), dimension=4, text=TextConfig(analyzer="standard"))
    assert std["mappings"]["properties"][LEXICAL_FIELD]["analyzer"] == "standard"


def test_text_analyzer_is_configurable(tmp_path: Path) -> None:
    cfg = tmp_path / "latentsearch.toml"
    cfg.write_text('[text]\nanalyzer = "standard"\n')
    assert load_settings(cfg).text.analyzer == "standard"
    assert Settings(text={"analyzer": "standard"}).text.analyzer == "standard"
    assert Settings().text.analyzer == "english"
    with pytest.raises(ValueError):
        Settings(text={"analyzer": "klingon"})


def test_embedded_copy_to_and_analyzer_from_the_mapping(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path)
    body = opensearch_index_body(EntitySchema(), dimension=4)
    backend.create_index("docs", body)
    backend.bulk("docs", [
        BulkAction("1#0", {"doc_id": "1", "title": "Statins lower cholesterol", "text": "A trial of drugs.",
                           "vector": [1, 0, 0, 0]}),
        BulkAction("2#0", {"doc_id": "2", "title": "Exercise", "text": "Running lowered blood pressure.",
                           "vector": [0, 1, 0, 0]}),
    ])
    hits = backend.search("docs", {"query": {"match": {LEXICAL_FIELD: "statin"}}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["1#0"]  # the title reached `content`, stemmed
    assert "content" not in hits[0]["_source"]  # copy_to does not change _source
    hits = backend.search("docs", {"query": {"match": {LEXICAL_FIELD: "lower"}}})["hits"]["hits"]
    assert {h["_id"] for h in hits} == {"1#0", "2#0"}  # lower / lowered -> lower


def test_unsupported_analysis_is_refused_with_what_is_supported(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path)
    with pytest.raises(MapperParsingError, match="supported: standard, english"):
        backend.create_index("x", {"mappings": {"properties": {"t": {"type": "text", "analyzer": "french"}}}})
    backend.create_index("y", {"mappings": {"properties": {"t": {"type": "text"}, "u": {"type": "text"}}}})
    backend.bulk("y", [BulkAction("1", {"t": "a b", "u": "c"})])
    with pytest.raises(UnsupportedQueryError, match="best_fields or most_fields"):
        backend.search("y", {"query": {"multi_match": {"query": "a", "fields": ["t", "u"], "type": "cross_fields"}}})
    with pytest.raises(UnsupportedQueryError, match="built-in analyzers"):
        backend.search("y", {"query": {"match": {"t": {"query": "a", "analyzer": "french"}}}})


def test_lexical_and_hybrid_bodies_use_content_and_the_one_fusion_default() -> None:
    vec = [0.1, 0.2, 0.3, 0.4]
    bm25 = build_body("statins", mode="bm25", k=5, vector=None)
    assert bm25["query"] == {"match": {LEXICAL_FIELD: {"query": "statins"}}}
    hybrid = build_body("statins", mode="hybrid", k=5, vector=vec)
    procs = hybrid["search_pipeline"]["phase_results_processors"]
    if DEFAULT_FUSION == "rrf":
        assert procs == dsl.rrf_pipeline(RRF_RANK_CONSTANT)["phase_results_processors"]
    else:
        assert procs[0]["normalization-processor"]["combination"]["parameters"]["weights"] == list(DEFAULT_WEIGHTS)
    custom = build_body("statins", mode="hybrid", k=5, vector=vec, fusion="min_max", weights=(0.6, 0.4))
    proc = custom["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]
    assert proc["combination"]["parameters"]["weights"] == [0.6, 0.4]
    rrf = build_body("statins", mode="hybrid", k=5, vector=vec, fusion="rrf")
    assert "score-ranker-processor" in rrf["search_pipeline"]["phase_results_processors"][0]
    with pytest.raises(ValueError, match="no weights"):
        build_body("statins", mode="hybrid", k=5, vector=vec, fusion="rrf", weights=(0.5, 0.5))


def test_elasticsearch_follows_the_bodys_fusion() -> None:
    """ES has no search pipelines: the inline pipeline picks the retriever (rrf with its rank constant, or
    linear min-max with the weights), whatever the client's default hybrid mode."""
    from latentsearch.backends.es_dialect import translate_search_body

    vec = [0.1, 0.2, 0.3, 0.4]
    rrf = build_body("statins", mode="hybrid", k=5, vector=vec, fusion="rrf")
    es, _ = translate_search_body(rrf, hybrid="linear")
    assert es["retriever"]["rrf"]["rank_constant"] == RRF_RANK_CONSTANT
    assert es["retriever"]["rrf"]["retrievers"][0]["standard"]["query"] == {"match": {LEXICAL_FIELD: {"query": "statins"}}}
    mm = build_body("statins", mode="hybrid", k=5, vector=vec, fusion="min_max", weights=(0.3, 0.7))
    es, _ = translate_search_body(mm, hybrid="rrf")
    assert [r["weight"] for r in es["retriever"]["linear"]["retrievers"]] == [0.3, 0.7]
