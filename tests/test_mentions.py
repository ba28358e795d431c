"""Per-mention type-aware vectors (issue 4): span offsets, the early-stopping mention encoder, the
projection head, the synthetic typed-mention set, the `mentions` ingest processor with `entities`
queries on the embedded engine, and the CLI (help + a small R-Precision evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import DATA

WNUT_DEV = DATA / "wnut17" / "emerging.dev.head200.conll"
runner = CliRunner()


@pytest.fixture(scope="module")
def encoder():
    from latentsearch.models.mention_encoder import get_mention_encoder
    from latentsearch.models.mention_head import load_head

    _, cfg = load_head()
    return get_mention_encoder(cfg.llm, cfg.layer, cfg.site)  # type: ignore[arg-type]


def test_spacy_spans_have_exact_char_offsets_on_real_sentences() -> None:
    from latentsearch.models.spans import get_span_detector, read_conll

    texts = [s.text for s in read_conll(WNUT_DEV)[:60]]
    texts.append("Barack Obama flew to Redondo Beach with Lufthansa on Monday.")
    spans = get_span_detector().detect(texts)
    assert len(spans) == len(texts)
    assert sum(map(len, spans)) > 20
    for text, found in zip(texts, spans):
        for s in found:
            assert 0 <= s.start < s.end <= len(text) and text[s.start : s.end] == s.text
    last = {s.text for s in spans[-1]}
    assert {"Barack Obama", "Lufthansa"} <= last and "Monday" not in last  # DATE dropped: not a named entity


def test_conll_reader_rebuilds_typed_gold_spans() -> None:
    from latentsearch.models.spans import read_conll

    sents = read_conll(WNUT_DEV)
    assert len(sents) == 200  # the first 200 sentences of WNUT-17 dev (tests/data/README.md)
    first = next(s for s in sents if s.spans)
    assert [(sp.text, t) for sp, t in zip(first.spans, first.types)][:2] == [("Redondo Beach Blvd", "location"),
                                                                            ("Gardena", "location")]
    assert {t for s in sents for t in s.types} == {"person", "location", "corporation", "product", "creative work",
                                                   "group"}
    for s in sents:
        assert all(s.text[sp.start : sp.end] == sp.text for sp in s.spans)


def test_encoder_stops_after_its_block_and_matches_a_full_forward(encoder) -> None:
    import torch

    from latentsearch.models.mention_encoder import decoder_layers
    from latentsearch.models.spans import Span

    model = encoder.lm.model
    layers = decoder_layers(model)
    ran: list[str] = []
    hooks = [layers[i].register_forward_hook(lambda *_a, i=i: ran.append(f"block{i}"))
             for i in range(encoder.layer + 1, len(layers))]
    hooks.append(model.lm_head.register_forward_hook(lambda *_a: ran.append("lm_head")))
    hooks.append(layers[encoder.layer].self_attn.o_proj.register_forward_hook(lambda *_a: ran.append("o_proj")))
    texts = ["Barack Obama visited Lufthansa headquarters.", "We saw a Tyrannosaurus at the Smithsonian today, wow"]
    spans = [[Span(start=0, end=12, text="Barack Obama"), Span(start=21, end=30, text="Lufthansa")],
             [Span(start=9, end=22, text="Tyrannosaurus"), Span(start=30, end=41, text="Smithsonian")]]
    try:
        got = encoder.encode(texts, spans)
    finally:
        for h in hooks:
            h.remove()
    assert ran == []  # nothing after block L's v_proj was computed: no later block, no LM head
    assert [g.shape for g in got] == [(2, encoder.dimension)] * 2 and encoder.dimension == 192

    # reference: a full, unbatched forward pass of each text, v_proj of block L at the span's last token
    captured = {}
    h = layers[encoder.layer].self_attn.v_proj.register_forward_hook(lambda _m, _i, o: captured.update(v=o))
    try:
        for text, sp, vecs in zip(texts, spans, got):
            enc = encoder.lm.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")[0].tolist()
            with torch.inference_mode():
                model(**enc)
            for s, v in zip(sp, vecs):
                last = max(i for i, (a, b) in enumerate(offsets) if b > a and a < s.end)
                assert offsets[last][1] >= s.end  # the token holding the span's last character
                np.testing.assert_allclose(v, captured["v"][0, last].numpy(), atol=2e-4)
    finally:
        h.remove()


def test_dimensions_come_from_the_config(encoder) -> None:
    from latentsearch.models.mention_encoder import site_dimension

    cfg = encoder.lm.model.config
    assert site_dimension(cfg, "v_proj") == cfg.num_key_value_heads * cfg.head_dim == 192
    assert site_dimension(cfg, "block") == cfg.hidden_size
    assert encoder.num_layers == cfg.num_hidden_layers


def test_head_outputs_normalised_500d_and_differs_from_raw(encoder) -> None:
    from latentsearch.models.mention_head import load_head, project
    from latentsearch.models.spans import Span

    head, cfg = load_head()
    assert cfg.in_dim == encoder.dimension and cfg.out_dim == 500
    assert [type(m).__name__ for m in head] == ["Linear", "SiLU", "Dropout", "Linear"]
    raw = encoder.encode(["Pfizer makes vaccines."], [[Span(start=0, end=6, text="Pfizer")]])[0]
    out = project(head, raw)
    assert out.shape == (1, 500) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert project(head, np.zeros((0, cfg.in_dim))).shape == (0, 500)


def test_synthetic_set_is_deterministic_and_fine_grained() -> None:
    from latentsearch.lab import typed_mentions as tm

    rows = tm.build()
    assert rows == tm.load()  # the committed JSONL is exactly what the builder makes
    types = {r.type for r in rows}
    assert len(types) >= 150 and {"dinosaur", "airline", "river", "vaccine", "programming language",
                                  "football club"} <= types
    assert all(r.text[r.start : r.end] == r.mention for r in rows)


def test_bm25_and_pair_auc() -> None:
    from latentsearch.lab.layer_sweep import pair_auc
    from latentsearch.lab.train_mention_head import bm25_scores

    s = bm25_scores("football club", ["the football club won", "a club sandwich", "rain all day"])
    assert s[0] > s[1] > s[2] == 0
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert pair_auc(v, np.array(["a", "a", "b", "b"])) == 1.0
    assert pair_auc(v, np.array(["a", "b", "a", "b"])) < 0.5


def test_type_clause_is_nested_knn_with_max_score() -> None:
    from latentsearch.query.entities import mention_type_clause

    clause = mention_type_clause("airline", k=7, vector=[0.0] * 500)
    assert clause["nested"]["path"] == "mentions" and clause["nested"]["score_mode"] == "max"
    assert clause["nested"]["query"]["knn"]["mentions.vector"]["k"] == 7
    assert "inner_hits" in clause["nested"]
    with pytest.raises(ValueError, match="empty"):
        mention_type_clause("  ", vector=[0.0] * 500)


DOCS = [
    {"id": "air", "text": "Our Lufthansa flight to Frankfurt was delayed again, so we rebooked with KLM."},
    {"id": "dino", "text": "The kids loved the Tyrannosaurus and the Triceratops skeletons at the museum."},
    {"id": "river", "text": "We kayaked down the Danube for a week and then followed the Rhine north."},
    {"id": "none", "text": "it was raining all day and i just stayed in bed with tea."},
]


def test_processor_writes_nested_mentions_and_entities_finds_the_doc(home: Path) -> None:
    from latentsearch.backends import open_backend
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.query.entities import search_entities

    corpus = home.parent / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    settings = load_settings(index="ents", ingest={"mentions": True, "latent": False})
    report = ingest(corpus, settings, progress=False)
    assert report.chunks_written == 4
    backend = open_backend(settings.backend)
    dino = backend.get("ents", "dino#0")
    texts = {m["text"] for m in dino["mentions"]}
    assert {"Tyrannosaurus", "Triceratops"} & texts
    for m in dino["mentions"]:
        assert dino["text"][m["start"] : m["end"]] == m["text"]
        assert len(m["vector"]) == 500 and abs(np.linalg.norm(m["vector"]) - 1) < 1e-3
    assert "mentions" not in backend.get("ents", "none#0")  # no entities, no mentions stored

    for query, want in (("airline", "air"), ("dinosaur", "dino"), ("river", "river")):
        result = search_entities(query, backend=backend, index="ents", k=3)
        assert result.hits[0].doc_id == want, (query, [(h.doc_id, h.score) for h in result.hits])
        assert len({h.doc_id for h in result.hits}) == len(result.hits)  # each document once
        assert result.hits[0].mentions and result.hits[0].mentions[0].text in result.hits[0].text

    out = runner.invoke(_app(), ["entities", "airline", "--index", "ents", "--k", "2", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["hits"][0]["doc_id"] == "air" and "vector" not in json.dumps(data["hits"][0]["mentions"])


def _app():
    from latentsearch.cli import app

    return app


@pytest.mark.parametrize("args", [["entities", "--help"], ["train", "mention-head", "--help"],
                                  ["eval", "layer-sweep", "--help"], ["eval", "entity-retrieval", "--help"],
                                  ["data", "typed-mentions", "--help"]])
def test_cli_help(args: list[str]) -> None:
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0 and "Usage" in result.output


def test_entities_cli_explains_a_missing_index(home: Path) -> None:
    result = runner.invoke(_app(), ["entities", "airline", "--index", "nope"])
    assert result.exit_code == 1 and "LATENTSEARCH_INGEST__MENTIONS" in result.output


def test_entity_retrieval_eval_on_a_slice(home: Path) -> None:
    out = home.parent / "eval.json"
    result = runner.invoke(_app(), ["eval", "entity-retrieval", "--conll", str(WNUT_DEV), "--limit", "40",
                                    "--no-progress", "--json", "--save", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["documents"] == 40
    systems = {r["system"]: r for r in report["systems"]}
    assert set(systems) == {"ours", "ours-no-head", "ours-gold-spans", "bm25", "minilm"}
    for row in systems.values():
        assert set(row["r_precision"]) == set(report["relevant"])
        assert all(0.0 <= v <= 1.0 for v in row["r_precision"].values())
    # the span oracle indexes every gold mention, so each relevant sentence has a candidate vector
    assert systems["ours-gold-spans"]["macro"] > 0
    store = {s["system"]: s for s in report["storage"]}
    assert store["ours (per mention)"]["bytes_per_vector"] == 2000
    assert store["minilm (per sentence)"]["bytes_per_vector"] == 1536


def test_entity_query_body_validates_against_the_opensearch_spec() -> None:
    from latentsearch import dsl
    from latentsearch.query.entities import mention_type_clause
    from tests.oracles.opensearch_spec import SpecNotFound, load_validator

    try:
        spec = load_validator()
    except SpecNotFound as err:
        pytest.fail(str(err))
    clause = mention_type_clause("airline", k=150, vector=[0.1] * 500)
    body = dsl.search_body(clause, size=50, collapse_field="doc_id")
    assert spec.validate_query(clause) == []
    assert spec.validate_request_body("search", body) == []
