"""ONNX export and onnxruntime inference vs PyTorch, on real SciFact text.

The embedder is exported once per session (about 20 s) and compared with the PyTorch embedder.
With `-m slow`: the extractor (LLM + merged LoRA + KV cache; 1-2 min export on 2 idle cores) and the
mention encoder (blocks 0..L + projection head) against their PyTorch paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from latentsearch.models.onnx_manifest import MANIFEST_NAME, fingerprint_files, load_manifest, weight_files

SAMPLE = Path(__file__).resolve().parents[1] / "latentsearch" / "data" / "scifact-sample.jsonl"


def scifact_records(n: int) -> list[dict]:
    with SAMPLE.open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def scifact_sentences(n: int) -> list[str]:
    """Real sentences of varied length: split the sample's abstracts at sentence ends."""
    out: list[str] = []
    for rec in scifact_records(200):
        out += [s for s in re.split(r"(?<=[.!?])\s+", rec["text"]) if len(s) > 20]
        if len(out) >= n:
            break
    return out[:n]


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from latentsearch.onnx_export.export import export

    out = tmp_path_factory.mktemp("onnx")
    export(out, ["embedder"])
    return out


def test_embedder_parity_with_pytorch(onnx_dir: Path, embedder) -> None:
    from latentsearch.models.factory import get_embedder

    onnx_embedder = get_embedder(str(onnx_dir))
    assert type(onnx_embedder).__name__ == "OnnxEmbedder"
    sentences = scifact_sentences(48)
    # a whole abstract too: longer than the model's 256 tokens, so truncation must agree as well
    long_text = max((r["text"] for r in scifact_records(50)), key=len)
    texts = [*sentences, long_text]
    assert len(embedder.tokenizer(long_text)["input_ids"]) > embedder.max_tokens
    ref = embedder.encode(texts)
    for batch_size in (1, 32):
        got = onnx_embedder.encode(texts, batch_size=batch_size)
        assert got.shape == ref.shape == (len(texts), 384)
        assert got.dtype == np.float32
        diff = float(np.abs(got - ref).max())
        assert diff < 1e-4, f"max abs difference {diff} at batch size {batch_size}"
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalisation happens inside the graph
    assert onnx_embedder.encode([]).shape == (0, 384)


def test_manifest_describes_the_graph(onnx_dir: Path, embedder) -> None:
    root, manifest = load_manifest(onnx_dir / "embedder")  # a role sub-folder finds its export root
    assert root == onnx_dir
    entry = manifest.model("embedder")
    model = onnx.load(str(onnx_dir / entry.folder / entry.files[0]))
    onnx.checker.check_model(model)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == entry.opset == 17
    assert [i.name for i in entry.inputs] == [i.name for i in model.graph.input]
    assert [i.name for i in entry.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.dtype == "int64" and i.shape == ["batch", "sequence"] for i in entry.inputs)
    assert [(o.name, o.dtype, o.shape) for o in entry.outputs] == [("sentence_embedding", "float32", ["batch", 384])]
    assert entry.source == "all-MiniLM-L6-v2" and entry.extra["pooling"] == "mean"
    assert entry.extra["max_tokens"] == embedder.max_tokens
    assert entry.source_fingerprint == fingerprint_files(weight_files(embedder.path))
    assert manifest.versions["onnx"] == onnx.__version__
    with pytest.raises(KeyError, match="export-onnx --what extractor"):
        manifest.model("extractor")


def test_onnx_embedder_drives_ingest_and_search(onnx_dir: Path, home: Path, embedder) -> None:
    """Config pointing at the export: ingest embeds with onnxruntime, the index records the source model
    (so the PyTorch embedder can query it), and a title query finds its own abstract."""
    from latentsearch.backends import open_backend
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.query.search import search

    records = scifact_records(20)
    corpus = home.parent / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    settings = load_settings(index="onnx-ingest", models={"embedder": str(onnx_dir)})
    report = ingest(corpus, settings, progress=False)
    assert report.records_read == 20 and report.embeddings_computed == report.chunks
    backend = open_backend(settings.backend)
    meta = backend.get_mapping("onnx-ingest")["_meta"]["latentsearch"]
    assert meta["embedder"] == "all-MiniLM-L6-v2" and meta["dimension"] == 384
    for rec in records[:5]:
        result = search(rec["title"], backend=backend, index="onnx-ingest", embedder=embedder, k=3)
        assert result.hits[0].doc_id == str(rec["_id"]), rec["title"]


def test_model_names_are_not_mistaken_for_exports(onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentsearch.models.onnx_manifest import is_onnx_export

    monkeypatch.chdir(onnx_dir)  # an export in the working directory ...
    assert not is_onnx_export("all-MiniLM-L6-v2")  # ... does not capture a packaged model's name
    assert is_onnx_export(".") and is_onnx_export(onnx_dir / "embedder")
    assert not is_onnx_export(onnx_dir / "extractor")  # not exported here


def test_missing_export_and_unknown_role_are_clear_errors(tmp_path: Path) -> None:
    from latentsearch.onnx_export.export import export

    with pytest.raises(FileNotFoundError, match="export-onnx"):
        load_manifest(tmp_path)
    with pytest.raises(ValueError, match="choose from embedder, extractor, mentions"):
        export(tmp_path, ["tokenizer"])  # type: ignore[list-item]
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_cuda_request_uses_cuda_only_when_onnxruntime_has_it() -> None:
    import onnxruntime as ort

    from latentsearch.models.onnx_runtime import providers

    assert providers("cpu") == ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert providers("cuda") == (["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda
                                 else ["CPUExecutionProvider"])


def test_export_cli_help_and_bad_choice() -> None:
    from latentsearch.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export-onnx", "--help"])
    assert result.exit_code == 0
    assert "latentsearch-onnx.json" in result.output and "--what" in result.output
    result = runner.invoke(app, ["export-onnx", "--out", "x", "--what", "embedder,tokenizer"])
    assert result.exit_code == 1
    assert "embedder, extractor, mentions" in result.output


# ---------------------------------------------------------------- the extractor (slow: 1-2 min export)


@pytest.fixture(scope="session")
def extractor_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from latentsearch.onnx_export.export import export

    out = tmp_path_factory.mktemp("onnx-llm")
    export(out, ["extractor"])
    return out


@pytest.mark.slow
def test_extractor_parity_with_pytorch(extractor_export: Path) -> None:
    import torch

    from latentsearch.models.factory import get_extractor

    _, manifest = load_manifest(extractor_export)
    entry = manifest.model("extractor")
    names = [i.name for i in entry.inputs]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert any(n.startswith("past_key_values.") for n in names), "exported without a KV cache"
    assert entry.adapter and entry.adapter.endswith("lentex-smollm2-lora-textfirst")

    torch_ex = get_extractor()  # SmolLM2 + the shipped LoRA adapter, merged
    onnx_ex = get_extractor(adapter=str(extractor_export))  # how ingest selects it: models.extractor_adapter
    assert type(onnx_ex).__name__ == "OnnxExtractor"
    records = scifact_records(8)
    prompts = [torch_ex.prompt(r["text"], "biomedical abstract", t)
               for r, t in zip(records, ["disease", "chemical", "organism", "disease"] * 2)]
    # one forward pass: next-token logits at every position of real prompts
    tok = torch_ex.lm.tokenizer
    for prompt in prompts[:4]:
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ref = torch_ex.lm.model(**enc).logits[0]
            got = onnx_ex.lm.model(**enc).logits[0]
        assert torch.equal(ref.argmax(-1), got.argmax(-1)), prompt[:80]
        assert float((ref - got).abs().max()) < 1e-2
    # greedy decoding with the KV cache, batched with left padding: the same answers
    assert onnx_ex.generate(prompts) == torch_ex.generate(prompts)
    # the constrained (options) path scores with full forward passes
    texts = [r["text"] for r in records[:3]]
    opts = ["randomized controlled trial", "cohort study", "case report", "laboratory study"]
    assert onnx_ex.choose(texts, "biomedical abstract", "study type", opts) == \
        torch_ex.choose(texts, "biomedical abstract", "study type", opts)


# ---------------------------------------------------------------- the mention encoder (blocks 0..L + head)


@pytest.fixture(scope="session")
def mention_head_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A projection head for an early block (a small graph, a quick export). Parity does not depend on
    trained weights, so a seeded, untrained head of the real architecture stands in when the shipped one
    is absent; the shipped head, when present, is exported by the slow test."""
    import torch
    from safetensors.torch import save_file

    from latentsearch.models.llm import load_llm
    from latentsearch.models.mention_encoder import site_dimension
    from latentsearch.models.mention_head import HeadConfig, build_head

    lm = load_llm()
    cfg = HeadConfig(layer=3, site="v_proj", in_dim=site_dimension(lm.model.config, "v_proj"))
    torch.manual_seed(0)
    head = build_head(cfg)
    folder = tmp_path_factory.mktemp("mention-head")
    save_file(head.state_dict(), str(folder / "head.safetensors"))
    (folder / "config.json").write_text(cfg.model_dump_json())
    return folder


def _mention_parity(export_root: Path, head_dir: Path) -> None:
    from latentsearch.models.mention_head import MentionVectorizer
    from latentsearch.models.onnx_runtime import OnnxMentionVectorizer
    from latentsearch.models.spans import get_span_detector

    texts = [r["text"] for r in scifact_records(6)]
    spans = get_span_detector("spacy").detect(texts)
    assert sum(len(s) for s in spans) >= 10
    ref = MentionVectorizer(head_path=head_dir).encode_spans(texts, spans)
    got = OnnxMentionVectorizer(export_root, batch_size=4).encode_spans(texts, spans)
    for r, g, s in zip(ref, got, spans):
        assert r.shape == g.shape == (len(s), 500)
        if len(s):
            cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))
            assert cos.min() > 0.999, cos.min()


@pytest.mark.slow
def test_mention_encoder_parity_with_pytorch(tmp_path: Path, mention_head_dir: Path) -> None:
    from latentsearch.onnx_export.export import export

    manifest = export(tmp_path, ["mentions"], mention_head=mention_head_dir)
    entry = manifest.model("mentions")
    assert [i.name for i in entry.inputs] == ["input_ids", "attention_mask", "span_ends"]
    assert entry.outputs[0].name == "mention_vectors" and entry.extra == {**entry.extra, "layer": 3, "dimension": 500}
    _mention_parity(tmp_path, mention_head_dir)


@pytest.mark.slow
def test_shipped_mention_head_export_parity(tmp_path: Path) -> None:
    from latentsearch.models.mention_head import ARTIFACT
    from latentsearch.onnx_export.export import export

    if not (ARTIFACT / "head.safetensors").is_file():
        pytest.skip(f"no trained mention head at {ARTIFACT} yet (`latentsearch train mention-head`)")
    export(tmp_path, ["mentions"])
    _mention_parity(tmp_path, ARTIFACT)
