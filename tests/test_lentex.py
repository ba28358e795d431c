"""LentEx: prompts, answer normalisation, constrained choice, the synthetic-data pipeline (filters,
splits, teacher over real HTTP), the nearest-label baseline and the latent ingest processor."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from latentsearch.lab import lentex_data as ld
from latentsearch.models.extractor import INSTRUCTIONS, normalize_answer, user_message
from latentsearch.models.factory import get_extractor


def test_five_paraphrased_instructions() -> None:
    assert len(INSTRUCTIONS) == 5
    assert INSTRUCTIONS[0] == "From the given {text_type}, determine the {latent_entity_type}."
    assert INSTRUCTIONS[4] == "Examine the {text_type} provided and determine the {latent_entity_type}."
    msg = user_message("Great goal in the 90th minute.", "sports commentary", "sport name", instruction=1)
    assert msg.startswith("Based on the provided sports commentary, identify the sport name.")
    assert msg.endswith("Sports commentary: Great goal in the 90th minute.")
    assert "one of: rct; cohort" in user_message("x", "abstract", "study type", options=["rct", "cohort"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Football", ["football"]),
        ("  The sport name is: Ice Hockey.", ["ice hockey"]),
        ("Answer: diabetes, hypertension; obesity, diabetes", ["diabetes", "hypertension", "obesity"]),
        ('"Jazz"\n\nJazz is a genre that...', ["jazz"]),
        ("a, b, c, d, e", ["a", "b", "c"]),
        ("", []),
        ("this answer is far too long to be an entity name at all really", []),
    ],
)
def test_normalize_answer(raw: str, expected: list[str]) -> None:
    assert normalize_answer(raw) == expected


def _examples(domain: str, pairs: list[tuple[str, str]], text_type: str = "review", etype: str = "genre") -> list[ld.Example]:
    return [ld.Example(domain=domain, text_type=text_type, latent_entity_type=etype, text=t, label=lab) for t, lab in pairs]


def test_filters_drop_written_labels_and_near_duplicates() -> None:
    rows = _examples("d", [
        ("Spaceships battle near a dying star while the crew mutinies.", "science fiction"),
        ("A science fiction saga.", "science fiction"),  # label written: Rouge-L 0.67 > 0.5
        ("Spaceships battle near a dying star while the crew mutinies!", "science fiction"),  # same text
        ("Spaceships battle near a dying star while the whole crew mutinies.", "science fiction"),  # near-dup
        ("Two strangers fall for each other over letters.", "romance"),
        ("", "empty"),
    ])
    kept, stats = ld.filter_examples(rows)
    assert [k.label for k in kept] == ["science fiction", "romance"]
    assert (stats.dropped_label_in_text, stats.dropped_near_duplicate, stats.dropped_empty) == (1, 2, 1)
    assert ld.rouge_l("a science fiction saga about a robot", "science fiction") < 0.5  # the paper filter only catches short texts


def test_split_holds_out_whole_domains(tmp_path: Path) -> None:
    domains = [ld.Domain(domain=f"x{i}", text_type=f"type {i}", latent_entity_type="thing", category=f"c{i % 3}")
               for i in range(20)]
    domains.append(ld.Domain(domain="bio", text_type="biomedical abstract", latent_entity_type="disease", category="c0"))
    examples = [ex for d in domains for ex in _examples(d.domain, [(f"text {d.domain} {j}", f"l{j}") for j in range(10)],
                                                        d.text_type, d.latent_entity_type)]
    rows = ld.split(domains, examples, unseen=6, seen_test=0.2)
    unseen = {r.domain for r in rows if r.split == "test_unseen"}
    assert len(unseen) == 6 and "bio" not in unseen  # our own index types are never held out
    assert not unseen & {r.domain for r in rows if r.split != "test_unseen"}
    seen_test = [r for r in rows if r.split == "test_seen"]
    assert len(seen_test) == 2 * (21 - 6)


def test_build_from_parts_roundtrip(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    lines = []
    for i in range(14):
        lines.append({"kind": "domain", "domain": f"z{i}", "category": f"c{i % 4}", "text_type": f"note kind {i}",
                      "latent_entity_type": "mood"})
        lines += [{"kind": "example", "domain": f"z{i}", "text": f"entry {i} number {j} about weather {j * i}",
                   "label": f"calm {j}"} for j in range(10)]
    (parts / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    stats = ld.build_from_parts(parts, tmp_path)
    assert stats["domains"] == 14 and sum(stats["splits"].values()) == stats["examples_kept"]
    assert len(stats["unseen_domains"]) == 12 and ld.load_split("train", tmp_path)


def test_teacher_reply_parsers() -> None:
    reply = 'Sure: seed_task_dict = {"podcast transcript": "podcast_topic", "tweet": "emotion"}'
    assert ld.parse_domain_dict(reply) == {"podcast transcript": "podcast_topic", "tweet": "emotion"}
    assert ld.parse_domain_dict("{'recipe': 'cuisine'}") == {"recipe": "cuisine"}
    rows = '<code>{"text_type": "The pasta was al dente.", "latent_entity_type": "italian"}\n{"text": "Sushi night", "label": "japanese"}\nnoise</code>'
    assert ld.parse_instances(rows) == [("The pasta was al dente.", "italian"), ("Sushi night", "japanese")]


class _ScriptedModel:
    """Stands in for the teacher *model* behind a real HTTP server (the code under test is the client)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if "data dictionary" in prompt:
            return '{"travel blog": "country", "song lyrics": "music_genre"}'
        return '<code>{"text": "Fjords, midnight sun and brown cheese.", "label": "norway"}</code>'


def _serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:  # fail here, not later with a confusing connection error
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start within 60 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", server


def test_openai_teacher_over_real_http() -> None:
    from fastapi import FastAPI, Header, HTTPException

    model = _ScriptedModel()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict, authorization: str | None = Header(None)) -> dict:
        if authorization != "Bearer k":
            raise HTTPException(401, "bad key")
        content = model(body["messages"][-1]["content"])
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}], "model": body["model"]}

    url, server = _serve(app)
    try:
        teacher = ld.OpenAITeacher(url, "teacher", api_key="k")
        domains = ld.generate_domains(teacher, rounds=2, per_round=2)
        assert {(d.text_type, d.latent_entity_type) for d in domains} >= {("travel blog", "country"), ("song lyrics", "music genre")}
        assert len({d.domain for d in domains}) == len(domains) == 6  # 4 seeds + 2 new, repeats removed
        examples = ld.generate_instances(teacher, domains[-1], n=3)
        assert [(e.text, e.label) for e in examples] == [("Fjords, midnight sun and brown cheese.", "norway")]
        assert "must be inferable from the text but never written in it" in model.prompts[-1]
        with pytest.raises(RuntimeError, match="401"):
            ld.OpenAITeacher(url, "teacher", api_key="wrong").complete("hi")
    finally:
        server.should_exit = True


def test_nearest_label_baseline(embedder) -> None:
    from latentsearch.lab.eval_extraction import nearest_label_baseline

    train = _examples("m", [("guitars and drums roaring", "rock"), ("a saxophone improvising", "jazz")])
    predict = nearest_label_baseline(train, lambda texts: embedder.encode(list(texts)))
    test = _examples("m", [("distorted electric guitar riffs and drums", "rock")])
    assert predict(test) == ["rock"]


@pytest.fixture(scope="module")
def base_extractor():
    return get_extractor(adapter=None, max_new_tokens=8)


def test_extractor_base_model_batches_and_normalises(base_extractor) -> None:
    texts = ["The patient had high blood sugar and was started on insulin.", "The striker scored twice."]
    out = base_extractor.extract(texts, "clinical note", "disease")
    assert len(out) == 2 and all(isinstance(v, list) and len(v) <= 3 for v in out)
    assert all(x == x.lower() and x.strip() == x for v in out for x in v)
    # greedy decoding: a known text gives a known value, and batching (left padding) changes nothing
    assert out[0] == ["diabetes"]
    assert out == [base_extractor.extract([t], "clinical note", "disease")[0] for t in texts]


def test_shipped_adapter_extracts_the_known_value_and_keys_the_cache(tmp_path: Path) -> None:
    """The shipped LoRA adapter, greedy: a title yields the value it was trained to imply. Its weights
    are part of the cache key: the same adapter with one changed byte gets another fingerprint, so
    cached extractions of an older adapter are never reused."""
    import shutil

    tuned = get_extractor()
    assert tuned.extract(["Insulin resistance in type 2 diabetes mellitus"], "biomedical article title",
                         "disease") == [["type 2 diabetes"]]
    assert tuned.fingerprint != get_extractor(adapter=None).fingerprint
    changed = tmp_path / tuned.adapter.name
    shutil.copytree(tuned.adapter, changed)
    weights = changed / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor
    weights.write_bytes(bytes(data))
    retrained = get_extractor(adapter=changed)
    assert retrained.fingerprint != tuned.fingerprint
    assert retrained.fingerprint.split(":")[:2] == tuned.fingerprint.split(":")[:2]  # same model, other weights


def test_extractor_options_are_constrained(base_extractor) -> None:
    options = ["football", "tennis", "swimming"]
    out = base_extractor.extract(["He served an ace on match point at Wimbledon."], "sports commentary", "sport name",
                                 options=options)
    assert len(out) == 1 and out[0][0] in options


def test_latent_processor_fills_the_index(home: Path, scifact_sample: Path) -> None:
    from latentsearch.backends.embedded import EmbeddedBackend
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest

    corpus = home.parent / "c.jsonl"
    corpus.write_bytes(b"\n".join(scifact_sample.read_bytes().splitlines()[:3]) + b"\n")
    settings = load_settings(index="lat", entities={"text_type": "biomedical abstract", "latent_types": [
        "disease", {"name": "study_type", "options": ["clinical trial", "laboratory study", "review"]}]},
        models={"extractor_adapter": "none"})
    report = ingest(corpus, settings, progress=False)
    assert report.rejected == 0
    backend = EmbeddedBackend(home / "db")
    hits = backend.search("lat", {"query": {"exists": {"field": "latent.study_type"}}, "size": 100})["hits"]["hits"]
    assert len(hits) == report.chunks  # a closed label set always yields one option
    assert all(h["_source"]["latent"]["study_type"][0] in {"clinical trial", "laboratory study", "review"} for h in hits)
    value = hits[0]["_source"]["latent"]["study_type"][0]
    assert backend.count("lat", {"term": {"latent.study_type": value}}) >= 1


def test_eval_extraction_nearest_label_on_the_shipped_splits() -> None:
    from latentsearch.lab.eval_extraction import evaluate, table

    report = evaluate(methods=["nearest-label"], similarity_model="all-MiniLM-L6-v2", limit=20)
    assert {(r.method, r.split, r.n) for r in report.rows} == {("nearest-label", "test_seen", 20),
                                                                ("nearest-label", "test_unseen", 20)}
    assert all(0.0 < r.similarity < 1.0 for r in report.rows)
    assert "unseen domains" in table(report)


def test_clustering_pieces_on_real_newsgroups() -> None:
    from latentsearch.lab.eval_clustering import read_labeled, stratified_sample, v_measure

    path = Path(__file__).resolve().parent / "data" / "20newsgroups" / "20newsgroups_head25.jsonl.gz"
    rows = read_labeled(path, "text", "label")
    assert 490 <= len(rows) <= 500  # read_labeled drops posts with an empty body
    sample = stratified_sample(rows, 200)
    assert len(sample) == 200 and len({lab for _, lab in sample}) == 20
    import numpy as np

    labels = [lab for _, lab in sample]
    onehot = np.eye(20)[[sorted(set(labels)).index(lab) for lab in labels]]
    assert v_measure(onehot, labels, seeds=2)[0] > 0.95  # a perfect representation clusters perfectly
    noise = np.random.default_rng(0).normal(size=(200, 8))
    assert v_measure(noise, labels, seeds=2)[0] < 0.4


def test_weighted_concatenation_keeps_unit_rows() -> None:
    import numpy as np

    from latentsearch.lab.eval_clustering import concatenate

    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.normal(size=(2, 5, 4)))
    assert np.allclose(concatenate(a, b), np.hstack([a, b]) / np.sqrt(2))  # weight 1: the plain concatenation
    for w in (0.0, 0.25, 2.0):
        x = concatenate(a, b, w)
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
        assert np.allclose(x[:, 4:], w * b / np.sqrt(1 + w * w)) and np.allclose(x[:, :4], a / np.sqrt(1 + w * w))


def test_clustering_fits_the_latent_weight_on_other_posts_and_reads_values_as_concepts() -> None:
    """The weighted concatenation's weight comes from a disjoint sample; the stratified rounding may give a few
    posts fewer than asked, and the report counts what was clustered. With the vocabulary, every latent row comes
    again over concept names, each one a concept of the values that post got."""
    from latentsearch.lab.eval_clustering import evaluate

    path = Path(__file__).resolve().parent / "data" / "20newsgroups" / "20newsgroups_head25.jsonl.gz"
    report = evaluate(path, n=30, fit_n=25, max_input_tokens=48, weights=(0.5, 1.0), vocabulary=True)
    assert report.documents <= 30 and report.fit_documents <= 25 and report.fit_documents >= 20
    assert set(report.fits) == {"latent entities", "latent concepts"}
    for side, fit in report.fits.items():
        assert set(fit.scores) == {"0.5", "1.0"} and fit.weight in (0.5, 1.0)
        assert any(r.representation.startswith(f"concatenation ({side}), latent weight {fit.weight:g} (fitted on")
                   for r in report.rows)
    assert len(report.rows) == 7 and 0 < report.concepts <= report.distinct_values
    assert all(len(s["concepts"]) <= len(set(s["entities"])) for s in report.samples)


def test_concept_names_merge_wordings_of_one_value() -> None:
    from latentsearch.lab.eval_clustering import concept_names
    from latentsearch.models.factory import get_embedder

    entities = [["Computer hardware"], ["computer hardware", "Space"], ["computer-hardware"], ["space"], []]
    named, concepts = concept_names(entities, "discussion topic", get_embedder())
    assert concepts == 2
    assert len(named[0]) == 1 and named[0] == named[2] and named[3][0].lower() == "space"
    assert named[1] == [named[0][0], named[3][0]] and named[4] == []


def test_openai_teacher_against_the_local_model_served_over_http() -> None:
    """The HTTP teacher path end to end with a real model behind it (SmolLM2 via LocalTeacher)."""
    from fastapi import FastAPI

    local = ld.LocalTeacher()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        content = local.complete(body["messages"][-1]["content"], temperature=0.0,
                                 max_tokens=int(body.get("max_tokens", 16)))
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

    url, server = _serve(app)
    try:
        reply = ld.OpenAITeacher(url, "SmolLM2-135M-Instruct").complete("Name one fruit.", temperature=0.0, max_tokens=12)
        assert reply.strip() and reply == local.complete("Name one fruit.", temperature=0.0, max_tokens=12)
    finally:
        server.should_exit = True
