"""Entity linking (issue 8): KB, candidate retrieval + decision rule, trie-constrained SmolLM2,
`links` processor, query filter, CLI, and the WNUT-17 linking set. Real models, real embedded engine."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsearch.models.kb import KBEntity, KnowledgeBase, kb_from_values, load_kb, normalise_alias
from latentsearch.models.spans import Span

runner = CliRunner()

ENTITIES = [
    KBEntity(id="paris-city", name="Paris", type="location", description="capital city of France, on the Seine"),
    KBEntity(id="paris-hilton", name="Paris", aliases=["Paris Hilton"], type="person",
             description="American media personality, socialite and DJ"),
    KBEntity(id="gardena", name="Gardena", type="location", description="city in Los Angeles County, California"),
    KBEntity(id="lufthansa", name="Lufthansa", aliases=["Deutsche Lufthansa"], type="corporation",
             description="German airline, flag carrier of Germany"),
    KBEntity(id="tyrannosaurus", name="Tyrannosaurus", aliases=["T. rex"], type="dinosaur",
             description="large carnivorous theropod dinosaur of the late Cretaceous"),
]


def _span(text: str, mention: str) -> Span:
    start = text.index(mention)
    return Span(start=start, end=start + len(mention), text=mention)


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return KnowledgeBase(ENTITIES).write(tmp_path_factory.mktemp("kb") / "kb.jsonl")


@pytest.fixture(scope="module")
def linker(kb_file: Path):
    from latentsearch.models.linker import EntityLinker

    return EntityLinker(load_kb(kb_file))


# --- knowledge base -------------------------------------------------------------------------------

def test_kb_roundtrip_alias_index_and_clear_errors(tmp_path: Path, kb_file: Path) -> None:
    kb = load_kb(kb_file)
    assert len(kb) == 5 and kb.by_id["paris-hilton"].aliases == ["Paris Hilton"]
    assert {e.id for e in kb.lookup("PARIS")} == {"paris-city", "paris-hilton"}
    assert [e.id for e in kb.lookup("#paris-hilton")] == ["paris-hilton"]
    assert [e.id for e in kb.lookup("t rex")] == ["tyrannosaurus"]
    assert kb.lookup("Berlin") == []
    assert normalise_alias("  Café-Olé!! ") == "cafe ole"

    with pytest.raises(FileNotFoundError, match="kb build"):
        load_kb(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "name": "A"}\n{"name": "no id"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_kb(bad)
    with pytest.raises(ValueError, match="duplicate entity id"):
        KnowledgeBase([ENTITIES[0], ENTITIES[0]])


def test_kb_from_values_merges_surface_variants_and_user_entities() -> None:
    kb = kb_from_values({"disease": Counter({"diabetes": 3, "asthma": 1})},
                        Counter({"BRCA1": 2, "brca1": 1, "p53": 1}), min_mentions=2,
                        extra=[KBEntity(id="disease:asthma", name="asthma", description="chronic airway disease")])
    assert set(kb.by_id) == {"disease:diabetes", "disease:asthma", "mention:brca1"}
    assert kb.by_id["disease:asthma"].description == "chronic airway disease"  # user file wins
    assert kb.by_id["mention:brca1"].name == "BRCA1" and kb.by_id["mention:brca1"].aliases == ["brca1"]


def test_build_kb_from_an_ingested_index(home: Path) -> None:
    from latentsearch.backends import BulkAction, open_backend
    from latentsearch.config import EntitySchema, load_settings
    from latentsearch.mappings.builder import opensearch_index_body
    from latentsearch.models.kb import build_kb_from_index

    settings = load_settings(index="kbsrc")
    backend = open_backend(settings.backend)
    body = opensearch_index_body(EntitySchema(latent_types=["disease"]), dimension=4)
    backend.create_index("kbsrc", body)
    docs = [{"doc_id": "a", "text": "x", "latent": {"disease": ["diabetes"]},
             "mentions": [{"text": "Metformin", "start": 0, "end": 9}]},
            {"doc_id": "b", "text": "y", "latent": {"disease": ["diabetes", "obesity"]},
             "mentions": [{"text": "metformin", "start": 0, "end": 9}, {"text": "Oslo", "start": 10, "end": 14}]}]
    backend.bulk("kbsrc", [BulkAction(d["doc_id"], d) for d in docs], refresh=True)
    kb = build_kb_from_index(backend, "kbsrc", min_mentions=2)
    assert set(kb.by_id) == {"disease:diabetes", "disease:obesity", "mention:metformin"}
    assert kb.by_id["disease:diabetes"].type == "disease"
    with pytest.raises(ValueError, match="does not exist"):
        build_kb_from_index(backend, "missing")


# --- trie-constrained decoding --------------------------------------------------------------------

def test_trie_decoding_can_only_write_a_candidate(linker) -> None:
    from latentsearch.models.linker import build_trie

    dis = linker.disambiguator
    text = "Paris posted a new selfie with her dog and her new perfume line; the socialite loves attention."
    span = _span(text, "Paris")
    cands = [linker.kb.by_id["paris-city"], linker.kb.by_id["paris-hilton"]]
    chosen, prob, passes = dis.choose(text, span, cands)
    assert chosen.id == "paris-hilton" and 0.5 < prob <= 1.0  # selfie, perfume line, socialite: the person
    assert passes == 1  # the labels share "Paris (" and only branch once: copied tokens cost no pass
    # one candidate: the trie is a single path, copied without any forward pass
    only, p1, passes1 = dis.choose(text, span, cands[:1])
    assert only.id == "paris-city" and p1 == 1.0 and passes1 == 0
    # a label that is a prefix of another still ends at its own leaf (the end-of-turn token)
    ids = [dis.tok(c.label, add_special_tokens=False).input_ids + [dis.end_id] for c in cands]
    root = build_trie(list(zip(ids, cands, strict=True)))
    node = root
    while len(node.children) == 1:
        node = next(iter(node.children.values()))
    assert len(node.children) == 2  # the branching point is the type token


# --- decision rule --------------------------------------------------------------------------------

def test_decision_rule_copies_unambiguous_and_calls_llm_only_for_homonyms(linker) -> None:
    text = "Paris posted a selfie from Gardena before her Lufthansa flight."
    spans = [_span(text, "Paris"), _span(text, "Gardena"), _span(text, "Lufthansa")]
    before = linker.stats.llm_calls
    links = {x.mention: x for x in linker.link_spans(text, spans)}
    assert links["Gardena"].method == "alias" and links["Gardena"].entity_id == "gardena"
    assert links["Lufthansa"].method == "alias" and links["Lufthansa"].score == 1.0
    assert links["Paris"].method == "llm" and links["Paris"].candidates == 2
    assert links["Paris"].entity_id in {"paris-city", "paris-hilton"}
    assert linker.stats.llm_calls - before == 1  # one generative call for three mentions

    # no alias hit: the dense retriever over name + description decides, or leaves it unlinked
    text2 = "The T-Rex skeleton towered over the children."
    dense = linker.link_spans(text2, [_span(text2, "T-Rex skeleton")])
    assert [(x.entity_id, x.method) for x in dense] == [("tyrannosaurus", "dense")]
    text3 = "my cat refused breakfast"
    assert linker.link_spans(text3, [_span(text3, "breakfast")]) == []

    # without the shortcut every mention with a candidate is decided by the LLM
    calls = linker.stats.llm_calls
    slow = linker.link_spans(text, spans, shortcut=False)
    assert linker.stats.llm_calls - calls == 3 and {x.method for x in slow} == {"llm"}
    assert {x.entity_id for x in slow} <= set(linker.kb.by_id)


# --- ingest processor + query filter + CLI --------------------------------------------------------

def test_links_processor_ingest_and_nested_filter(home: Path, kb_file: Path) -> None:
    from latentsearch.backends import open_backend
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.query.links import links_boost, links_filter

    docs = [{"id": "fly", "text": "Our Lufthansa flight to Gardena was delayed again."},
            {"id": "dino", "text": "The kids loved the Tyrannosaurus skeleton at the museum."},
            {"id": "none", "text": "it was raining all day and i just stayed in bed with tea."}]
    corpus = home.parent / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    settings = load_settings(index="linked", ingest={"links": True, "latent": False}, models={"kb": str(kb_file)})
    assert ingest(corpus, settings, progress=False).chunks_written == 3
    backend = open_backend(settings.backend)
    fly = backend.get("linked", "fly#0")
    assert {x["entity_id"] for x in fly["links"]} == {"lufthansa", "gardena"}
    for x in fly["links"]:
        assert fly["text"][x["start"]:x["end"]] == x["mention"] and set(x) == {"mention", "start", "end",
                                                                               "entity_id", "score"}
    assert "links" not in backend.get("linked", "none#0")

    hits = backend.search("linked", {"query": {"bool": {"filter": [links_filter(["tyrannosaurus"])]}}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["dino#0"]
    hits = backend.search("linked", {"query": links_filter(["gardena", "tyrannosaurus"], min_score=0.5)})["hits"]["hits"]
    assert {h["_id"] for h in hits} == {"fly#0", "dino#0"}
    boosted = backend.search("linked", {"query": {"bool": {"should": [{"match": {"text": "the"}},
                                                                      links_boost(["lufthansa"], boost=5.0)]}}})
    assert boosted["hits"]["hits"][0]["_id"] == "fly#0"
    with pytest.raises(ValueError, match="no entity ids"):
        links_filter([])

    no_kb = load_settings(index="x", ingest={"links": True, "latent": False})
    with pytest.raises(ValueError, match="models.kb"):
        from latentsearch.ingest.links import link_processor

        link_processor(no_kb)


def test_cli_link_json_and_help(home: Path, kb_file: Path) -> None:
    from latentsearch.cli import app

    out = runner.invoke(app, ["link", "We landed in Gardena on a Lufthansa jet.", "--kb", str(kb_file), "--json"])
    assert out.exit_code == 0, out.output
    links = json.loads(out.stdout)
    assert {(x["entity_id"], x["method"]) for x in links} == {("gardena", "alias"), ("lufthansa", "alias")}
    assert "constrained" in runner.invoke(app, ["link", "--help"]).stdout
    missing = runner.invoke(app, ["link", "text"])
    assert missing.exit_code != 0 and "--kb" in missing.output


# --- the WNUT-17 linking set ----------------------------------------------------------------------

def test_linking_set_is_consistent() -> None:
    from latentsearch.lab.eval_linking import load_set

    kb, docs = load_set()
    mentions = [m for d in docs for m in d.mentions]
    assert 100 <= len(mentions) <= 150
    for d in docs:
        for m in d.mentions:
            assert d.text[m.start:m.end] == m.text and m.entity_id in kb.by_id
    ambiguous = sum(len(kb.lookup(m.text)) > 1 for m in mentions)
    assert 0.15 < ambiguous / len(mentions) < 0.5


def test_eval_linking_small(home: Path) -> None:
    from latentsearch.lab.eval_linking import evaluate

    report = evaluate(limit=6)
    for arm in (report.with_shortcut, report.without_shortcut):
        assert arm.mentions == report.mentions == 10
    assert report.without_shortcut.llm_share == 1.0
    assert report.with_shortcut.llm_calls == report.ambiguous_mentions == 2
    assert report.with_shortcut.by_method == {"alias": 8, "dense": 0, "llm": 2, "nil": 0}
    # greedy decoding on the first 6 documents: 9 of 10 mentions right with the alias shortcut, better
    # than taking the first candidate (8) and far better than asking the 135M LLM about every mention
    assert report.with_shortcut.micro_f1 == pytest.approx(0.9)
    assert report.with_shortcut.micro_f1 > report.first_candidate_f1 > report.without_shortcut.micro_f1
    assert report.alias_candidate_recall == 1.0 and report.retriever_only_f1 == pytest.approx(0.9)


@pytest.mark.slow
def test_eval_linking_full_beats_trivial_baseline() -> None:
    from latentsearch.lab.eval_linking import evaluate

    report = evaluate()
    assert report.with_shortcut.micro_f1 > max(report.first_candidate_f1, report.retriever_only_f1)
    assert report.with_shortcut.micro_f1 >= report.without_shortcut.micro_f1
    assert report.with_shortcut.llm_share < 0.5 and report.speedup > 1.0
