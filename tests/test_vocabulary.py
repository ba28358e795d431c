"""The value vocabulary (ingest/vocabulary.py) with the real MiniLM and the real embedded engine: clustering,
curation that survives updates and rebuilds, storage in the sidecar index, `latentsearch vocab`, and a
renamed concept still finding its documents through the filter. Documents get their latent values
written directly by bulk (no LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsearch.backends import BulkAction, open_backend
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.cli import app
from latentsearch.config import EntitySchema, load_settings
from latentsearch.ingest.vocabulary import (
    Vocabulary,
    build_vocabulary,
    count_body,
    header_body,
    index_values,
    load_vocabulary,
    normalise,
    page_body,
    save_vocabulary,
    stale_body,
    update_index_vocabulary,
    update_vocabulary,
    values_body,
    vocab_index,
    vocab_index_body,
)
from latentsearch.mappings import opensearch_index_body

INDEX = "papers"
SCHEMA = EntitySchema(text_type="abstract", latent_types=["anatomy", "research_field"])
# doc id -> latent values, as a small extractor writes them: variants of one thing, and distinct things
DOCS: dict[str, dict[str, list[str]]] = {
    "1": {"anatomy": ["T-cells"], "research_field": ["immunology"]},
    "2": {"anatomy": ["t cell", "T cells"], "research_field": ["immunology"]},
    "3": {"anatomy": ["T cells"], "research_field": ["heart surgery"]},
    "4": {"anatomy": ["liver"], "research_field": ["cardiovascular surgery"]},
    "5": {"anatomy": ["brain"], "research_field": ["neuroscience"]},
    "6": {"anatomy": ["heart"], "research_field": ["cardiovascular surgery"]},
    "7": {"anatomy": ["kidney", "kidneys"], "research_field": ["genetics"]},
    "8": {"anatomy": ["gene editing"], "research_field": ["genetics"]},
}
runner = CliRunner()


def fill(backend, docs: dict[str, dict[str, list[str]]], index: str = INDEX) -> None:
    backend.create_index(index, opensearch_index_body(SCHEMA, dimension=4), exist_ok=True)
    actions = [BulkAction(id=k, source={"doc_id": k, "text": f"document {k}", "vector": [1.0, float(k), 0.0, 0.5],
                                        "latent": v}) for k, v in docs.items()]
    assert all(r.ok for r in backend.bulk(index, actions, refresh=True))


@pytest.fixture()
def engine(tmp_path: Path) -> EmbeddedBackend:
    backend = EmbeddedBackend(tmp_path / "db")
    fill(backend, DOCS)
    return backend


def ids_matching(backend, vocab: Vocabulary, etype: str, names: list[str]) -> set[str]:
    body = {"size": 100, "query": vocab.filter_clause(etype, names)}
    return {h["_id"] for h in backend.search(INDEX, body)["hits"]["hits"]}


# ---------------------------------------------------------------- normalisation and clustering


@pytest.mark.parametrize(("a", "b"), [("T-cells", "t cell"), ("T cells", "t_cell"), ("Kidneys", "kidney"),
                                      ("therapies", "Therapy"), ("Naïve B-cells", "naive b cell")])
def test_normalise_meets_variants(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(("a", "b"), [("sepsis", "seps"), ("virus", "viru"), ("gas", "ga"), ("liver", "livers x")])
def test_normalise_keeps_words_apart(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


def test_clustering_merges_variants_and_keeps_distinct_values_apart(embedder) -> None:
    values = {"anatomy": {"T cells": 5, "T-cells": 2, "t cell": 1, "liver": 4, "brain": 3, "heart": 3, "kidney": 2,
                          "gastrointestinal tract": 3, "intestinal tract": 1},
              "research_field": {"cardiovascular surgery": 3, "heart surgery": 1, "immunology": 2, "genetics": 2}}
    vocab = build_vocabulary(values, embedder)
    anatomy = {c.name: set(c.aliases) for c in vocab.concepts["anatomy"]}
    assert anatomy["T cells"] == {"T cells", "T-cells", "t cell"}  # normalised key, name = most frequent form
    assert anatomy["gastrointestinal tract"] == {"gastrointestinal tract", "intestinal tract"}  # cosine 0.88
    for distinct in ("liver", "brain", "heart", "kidney"):
        assert anatomy[distinct] == {distinct}
    fields = {c.name: set(c.aliases) for c in vocab.concepts["research_field"]}
    assert fields == {"cardiovascular surgery": {"cardiovascular surgery", "heart surgery"},
                      "immunology": {"immunology"}, "genetics": {"genetics"}}
    assert vocab.get("anatomy", "T cells").count == 8 and vocab.names("anatomy")[0] == "T cells"
    # a stricter threshold keeps the embedding-only pairs apart, the normalised variants together
    strict = build_vocabulary(values, embedder, threshold=0.95)
    assert strict.concept_of("research_field", "heart surgery").name == "heart surgery"
    assert strict.concept_of("anatomy", "t-cell").name == "T cells"


def test_update_keeps_renames_merges_and_drops(embedder) -> None:
    values = {"anatomy": {"T cells": 5, "t cell": 1, "lymphocyte": 2, "liver": 4, "gene editing": 3, "brain": 1}}
    vocab = build_vocabulary(values, embedder)
    vocab.rename("anatomy", "T cells", "T lymphocyte")
    vocab.merge("anatomy", "lymphocyte", "T lymphocyte")
    vocab.drop("anatomy", "gene editing")
    assert "gene editing" not in vocab.names("anatomy")
    assert vocab.concept_of("anatomy", "gene editing") is None

    later = {"anatomy": {**values["anatomy"], "T-cells": 2, "Gene-Editing": 1, "kidney": 1}}
    for updated in (update_vocabulary(vocab, later, embedder),
                    update_vocabulary(vocab.user_edits(), later, embedder)):  # what `vocab rebuild` runs
        t = updated.get("anatomy", "T lymphocyte")
        assert {"T cells", "t cell", "lymphocyte", "T-cells"} <= set(t.aliases) and t.user_edited
        assert "lymphocyte" not in [c.name for c in updated.concepts["anatomy"]]
        dropped = updated.concept_of("anatomy", "Gene-Editing", include_dropped=True)
        assert dropped is not None and dropped.dropped and dropped.name == "gene editing"
        assert "gene editing" not in updated.names("anatomy") and "Gene-Editing" not in updated.names("anatomy")
        assert updated.names("anatomy") == ["T lymphocyte", "liver", "brain", "kidney"]
    # values that left the index take their untouched concepts with them; edited ones stay
    gone = update_vocabulary(vocab, {"anatomy": {"liver": 2}}, embedder)
    assert [c.name for c in gone.concepts["anatomy"] if not c.user_edited] == ["liver"]
    assert gone.get("anatomy", "T lymphocyte").count == 0


def test_curation_errors_are_clear(embedder) -> None:
    vocab = build_vocabulary({"anatomy": {"liver": 2, "brain": 1, "heart": 1}}, embedder, index=INDEX)
    with pytest.raises(ValueError, match="already a form of the concept 'brain'.*merge"):
        vocab.rename("anatomy", "liver", "Brain")
    with pytest.raises(KeyError, match="no concept 'lung'"):
        vocab.merge("anatomy", "lung", "liver")
    with pytest.raises(KeyError, match="no latent type 'disease'.*anatomy"):
        vocab.terms_for("disease", "flu")
    vocab.drop("anatomy", "heart")
    with pytest.raises(ValueError, match="dropped"):
        vocab.terms_for("anatomy", "heart")
    with pytest.raises(ValueError, match="belongs to both"):
        Vocabulary.model_validate({"index": INDEX, "concepts": {"anatomy": [
            {"type": "anatomy", "name": "a", "aliases": ["x"]}, {"type": "anatomy", "name": "b", "aliases": ["x"]}]}})


# ---------------------------------------------------------------- storage on the embedded engine


def test_save_load_round_trip_and_generations(engine, embedder) -> None:
    assert load_vocabulary(engine, INDEX) is None
    assert index_values(engine, INDEX)["anatomy"]["T cells"] == 2
    vocab = update_index_vocabulary(engine, INDEX, embedder)
    assert vocab.version == 1 and vocab.model == embedder.name
    assert vocab.get("anatomy", "T cells").count == 3  # exact: doc 2 holds two forms of it, counted once
    assert vocab.get("anatomy", "kidney").count == 1
    loaded = load_vocabulary(engine, INDEX)
    assert loaded == vocab
    again = save_vocabulary(engine, INDEX, loaded)
    assert again.version == 2
    assert engine.count(vocab_index(INDEX)) == 1 + sum(len(cs) for cs in vocab.concepts.values())  # no stale docs
    assert load_vocabulary(engine, INDEX).version == 2


def test_a_renamed_concept_finds_its_documents(engine, embedder) -> None:
    vocab = update_index_vocabulary(engine, INDEX, embedder)
    before = ids_matching(engine, vocab, "anatomy", ["T cells"])
    assert before == {"1", "2", "3"}
    vocab.rename("anatomy", "T cells", "T lymphocyte")
    save_vocabulary(engine, INDEX, vocab)
    stored = load_vocabulary(engine, INDEX)
    assert ids_matching(engine, stored, "anatomy", ["T lymphocyte"]) == before
    # new documents with a new wording of it join the concept at the next update (what ingest runs)
    fill(engine, {"9": {"anatomy": ["T-Cell"], "research_field": []}})
    updated = update_index_vocabulary(engine, INDEX, embedder)
    assert ids_matching(engine, updated, "anatomy", ["T lymphocyte"]) == before | {"9"}


# ---------------------------------------------------------------- the CLI


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["vocab", *args])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())  # messages wrap at the terminal width


def test_cli_merge_rename_drop_export_import(home: Path, embedder) -> None:
    backend = open_backend(load_settings().backend)
    code, _, err = _cli("show", "--index", INDEX)
    assert code == 1 and "does not exist" in err
    fill(backend, DOCS)
    code, _, err = _cli("show", "--index", INDEX)
    assert code == 1 and "vocab update" in err
    code, out, err = _cli("update", "--index", INDEX)
    assert code == 0 and "version 1" in out, err

    code, out, err = _cli("rename", "--index", INDEX, "--type", "anatomy", "T cells", "T lymphocyte")
    assert code == 0, err
    code, out, err = _cli("merge", "--index", INDEX, "--type", "research_field", "genetics", "immunology")
    assert code == 0, err
    code, out, err = _cli("drop", "--index", INDEX, "-t", "anatomy", "gene editing")
    assert code == 0, err
    code, out, err = _cli("merge", "--index", INDEX, "--type", "anatomy", "lung", "liver")
    assert code == 1 and "no concept 'lung'" in err

    code, out, err = _cli("show", "--index", INDEX, "--json")
    assert code == 0, err
    shown = Vocabulary.model_validate_json(out)
    assert shown.version == 4 and "gene editing" not in [c.name for c in shown.concepts["anatomy"]]
    merged = shown.get("research_field", "immunology")
    assert set(merged.aliases) == {"immunology", "genetics"} and merged.count == 4
    vocab = load_vocabulary(backend, INDEX)
    assert ids_matching(backend, vocab, "anatomy", ["T lymphocyte"]) == {"1", "2", "3"}
    assert ids_matching(backend, vocab, "research_field", ["immunology"]) == {"1", "2", "7", "8"}
    assert vocab.get("anatomy", "gene editing").dropped

    code, out, err = _cli("show", "--index", INDEX, "--type", "anatomy", "--limit", "2")
    assert code == 0 and "T lymphocyte" in out and "T-cells" in out, err

    code, _, err = _cli("rebuild", "--index", INDEX, "--threshold", "0.95")  # edits survive a rebuild
    assert code == 0, err
    rebuilt = load_vocabulary(backend, INDEX)
    assert rebuilt.threshold == 0.95 and rebuilt.get("anatomy", "gene editing").dropped
    assert set(rebuilt.terms_for("anatomy", "T lymphocyte")) == {"T lymphocyte", "T cells", "T-cells", "t cell"}

    exported = home.parent / "vocab.json"
    code, _, err = _cli("export", "--index", INDEX, "--out", str(exported))
    assert code == 0, err
    data = json.loads(exported.read_text())
    data["concepts"]["anatomy"] = [c for c in data["concepts"]["anatomy"] if c["name"] != "brain"]
    exported.write_text(json.dumps(data))
    code, out, err = _cli("import", str(exported))
    assert code == 0 and "imported" in out, err
    imported = load_vocabulary(backend, INDEX)
    assert imported.version == rebuilt.version + 1
    assert "brain" not in imported.names("anatomy") and imported.concepts["research_field"] == \
        rebuilt.concepts["research_field"]

    bad = home.parent / "bad.json"
    bad.write_text('{"index": "papers", "concepts": {"disease": []}}')
    code, _, err = _cli("import", str(bad))
    assert code == 1 and "disease" in err

    result = runner.invoke(app, ["delete-index", INDEX, "--yes"])
    assert result.exit_code == 0 and not backend.index_exists(vocab_index(INDEX))


def test_help_teaches_what_a_concept_is() -> None:
    result = runner.invoke(app, ["vocab", "--help"])
    assert result.exit_code == 0
    for word in ("concept", "merge", "rename", "drop", "filter"):
        assert word in result.stdout


# ---------------------------------------------------------------- OpenSearch: spec-valid requests


@pytest.fixture(scope="module")
def spec():
    from tests.oracles.opensearch_spec import load_validator

    return load_validator()


def test_requests_are_spec_valid(spec, embedder) -> None:
    vocab = build_vocabulary({"anatomy": {"T cells": 2, "t cell": 1, "liver": 1}}, embedder, index=INDEX)
    checks = {
        "indices.create": [vocab_index_body()],
        "search": [values_body(["anatomy", "research_field"]), header_body(), page_body(3, 5000), stale_body(3),
                   count_body("anatomy", ["T cells", "t cell"]),
                   {"query": vocab.filter_clause("anatomy", ["T cells", "liver"])}],
    }
    for group, bodies in checks.items():
        for body in bodies:
            errors = spec.validate_request_body(group, body)
            assert not errors, f"{group} body violates the OpenSearch spec: {errors}\n{json.dumps(body)}"
    lines = [x for c in vocab.concepts["anatomy"] for x in ({"index": INDEX}, count_body("anatomy", c.aliases))]
    assert spec.validate_msearch(lines) == []
    doc = {"kind": "concept", "generation": 1, "seq": 0, "type": "anatomy", "name": "x", "aliases": ["x"],
           "count": 1, "user_edited": False, "dropped": False}
    assert set(doc) <= set(vocab_index_body()["mappings"]["properties"])  # `dynamic: strict` accepts it
    # negative control: the same validator refuses a misspelt aggregation
    bad = values_body(["anatomy"])
    bad["aggs"]["anatomy"]["terms"]["feild"] = bad["aggs"]["anatomy"]["terms"].pop("field")
    assert spec.validate_request_body("search", bad)


def test_save_and_load_over_http_on_osmem(osmem_clone, embedder) -> None:
    """The OpenSearch backend's real requests (bulk, search) against an OpenSearch-compatible server."""
    from latentsearch.config import BackendConfig

    backend = open_backend(BackendConfig(kind="opensearch", url=osmem_clone.url, timeout_s=10.0, max_retries=1))
    backend.create_index(INDEX, opensearch_index_body(SCHEMA, dimension=4))
    vocab = build_vocabulary({"anatomy": {"T cells": 2, "t cell": 1, "liver": 1}}, embedder, index=INDEX)
    vocab.drop("anatomy", "liver")
    stored = save_vocabulary(backend, INDEX, vocab)
    stored = save_vocabulary(backend, INDEX, stored)
    loaded = load_vocabulary(backend, INDEX)
    assert loaded == stored and loaded.version == 2 and loaded.get("anatomy", "liver").dropped
    assert backend.count(vocab_index(INDEX)) == 3


# ---------------------------------------------------------------- the ingest hook


class _KeywordExtractor:
    """A stand-in for the LLM extractor (not under test here): an organ when the text names one."""

    fingerprint = "keyword-extractor-1"
    WORDS = {"cell": "T-cells", "tumor": "tumour", "cancer": "tumours", "brain": "brain"}

    def extract(self, texts, text_type, prompt_name, options=None):
        return [[v for k, v in self.WORDS.items() if k in t.lower()][:2] for t in texts]


@pytest.mark.parametrize("vocab_on", [True, False])
def test_ingest_updates_the_vocabulary(home: Path, scifact_sample: Path, embedder, vocab_on: bool) -> None:
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.ingest.processors import EmbeddingProcessor, LatentEntityProcessor

    corpus = home.parent / "c.jsonl"
    corpus.write_bytes(b"\n".join(scifact_sample.read_bytes().splitlines()[:12]) + b"\n")
    settings = load_settings(index=INDEX, entities={"latent_types": ["anatomy"]}, ingest={"vocabulary": vocab_on})
    processors = [EmbeddingProcessor(embedder), LatentEntityProcessor(_KeywordExtractor(), settings.entities)]
    report = ingest(corpus, settings, processors=processors, progress=False)
    backend = open_backend(settings.backend)
    vocab = load_vocabulary(backend, INDEX)
    if not vocab_on:
        assert vocab is None and report.vocabulary_concepts is None
        return
    held = index_values(backend, INDEX)["anatomy"]
    assert held and report.vocabulary_concepts == len(vocab.concepts["anatomy"])
    assert {f for c in vocab.concepts["anatomy"] for f in c.aliases} == set(held)
    assert {"tumour", "tumours", "brain", "T-cells"} <= set(held)  # what the first 12 sample abstracts give
    assert vocab.concept_of("anatomy", "tumours") == vocab.concept_of("anatomy", "tumour") != \
        vocab.concept_of("anatomy", "brain")


@pytest.mark.opensearch_node
def test_vocabulary_on_a_real_opensearch_node(opensearch_node, embedder) -> None:
    """Update (terms aggregation, msearch counts), save and load on OpenSearch 2.19; a renamed concept's
    filter finds its documents there too."""
    from latentsearch.config import BackendConfig

    backend = open_backend(BackendConfig(kind="opensearch", url=opensearch_node.url, timeout_s=30.0, max_retries=1))
    index = "vocab-node"
    backend.delete_index(index)
    backend.delete_index(vocab_index(index))
    try:
        fill(backend, DOCS, index=index)
        vocab = update_index_vocabulary(backend, index, embedder)
        assert vocab.get("anatomy", "T cells").count == 3 and load_vocabulary(backend, index) == vocab
        vocab.rename("anatomy", "T cells", "T lymphocyte")
        save_vocabulary(backend, index, vocab)
        stored = load_vocabulary(backend, index)
        body = {"size": 20, "query": stored.filter_clause("anatomy", ["T lymphocyte"])}
        assert {h["_id"] for h in backend.search(index, body)["hits"]["hits"]} == {"1", "2", "3"}
        assert backend.count(vocab_index(index)) == 1 + sum(len(cs) for cs in stored.concepts.values())
    finally:
        backend.delete_index(index)
        backend.delete_index(vocab_index(index))
