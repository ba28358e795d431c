"""A lone question's extraction, made cheap without changing its answer: draft answers verified in one pass
(token trees), option scoring in one pass, bfloat16 packed Linear layers, and the embedded engine leaving no
spinning BLAS threads behind. Speed is measured in benchmarks/query.py; these tests check the answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentsearch.models.extractor import TokenTree

QUESTIONS = [
    "Statins lower the risk of myocardial infarction in adults.",
    "Helicase domains unwind DNA during replication.",
    "Tumour-infiltrating T cells predict survival in colorectal cancer.",
    "Insulin resistance in skeletal muscle precedes type 2 diabetes.",
]


def test_token_tree_merges_common_prefixes_in_order() -> None:
    tree = TokenTree([[1, 2, 3], [1, 2, 4], [5], [1, 6]], budget=100)
    assert tree.tokens == [1, 2, 3, 4, 5, 6]
    assert tree.parents == [-1, 0, 1, 1, -1, 0]
    assert tree.depths == [0, 1, 2, 2, 0, 1]
    assert tree.paths == [[0, 1, 2], [0, 1, 3], [4], [0, 5]]
    assert tree.children[-1] == {1: 0, 5: 4} and tree.children[1] == {3: 2, 4: 3}
    sees = tree.ancestry()
    assert sees[2].tolist() == [True, True, True, False, False, False]  # 3 sees 1, 2 and itself
    assert sees[5].tolist() == [True, False, False, False, False, True]


def test_token_tree_budget_cuts_later_sequences() -> None:
    tree = TokenTree([[1, 2, 3], [4, 5], [1, 2, 9]], budget=4)
    assert tree.tokens == [1, 2, 3, 4]
    assert tree.paths == [[0, 1, 2], [3], [0, 1]]  # the third reuses nodes but cannot add its own
    assert TokenTree([[1, 2]], budget=0).tokens == []


@pytest.fixture(scope="module")
def extractor():
    from latentsearch.models.extractor import LatentEntityExtractor

    return LatentEntityExtractor()  # the shipped (text-first) adapter, float32


def test_draft_answers_never_change_the_answer(extractor) -> None:
    """Speculative decoding with hints gives greedy decoding's answer whether the hints hold the answer, only its
    first tokens, or nothing useful; and whatever the tree budget."""
    for question in QUESTIONS:
        plain = extractor.extract([question], "biomedical claim", "anatomy")
        assert plain[0], question  # the model answers something for every question here
        answer = plain[0][0]
        words = answer.split()
        for hints in ([answer], ["liver", answer, "bone marrow"], [words[0], words[0] + " tissue"],
                      ["zebrafish fin", "kidney"], []):
            for nodes in (1, 16, 64):
                extractor.draft_nodes = nodes
                got = extractor.extract([question], "biomedical claim", "anatomy", hints=hints)
                assert got == plain, (question, hints, nodes)
    extractor.draft_nodes = type(extractor).draft_nodes


def test_one_pass_option_scores_equal_the_batched_scorer(extractor) -> None:
    options = ["heart", "heart muscle", "liver", "t cell receptor", "t cells", "skeletal muscle"]
    tok = extractor.lm.tokenizer
    for question in QUESTIONS[:2]:
        tree = extractor.score_options(question, "biomedical claim", "anatomy", options)
        prompt = extractor._ids(extractor.prompt(question, "biomedical claim", "anatomy", 0, options))
        batched = extractor._score_options_batched(prompt, [extractor._ids(o + tok.eos_token) for o in options])
        assert tree == pytest.approx(batched, abs=1e-4)


def test_bf16_and_int8_are_exclusive() -> None:
    from latentsearch.models.extractor import LatentEntityExtractor

    with pytest.raises(ValueError, match="int8 and bf16"):
        LatentEntityExtractor(int8=True, bf16=True)


def test_packed_bf16_linear_is_a_rounded_float_linear() -> None:
    import torch

    from latentsearch.models.bf16_linear import bf16_matmul_available, pack_linears_bf16

    if not bf16_matmul_available():
        pytest.skip("this CPU has no bfloat16 matmul (AMX / AVX512-BF16)")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8, bias=False))
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        ref = model(x)
        assert pack_linears_bf16(model) == 2
        got = model(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.allclose(got, ref, atol=0.05, rtol=0.02)
    assert "packed bfloat16" in repr(model)


def test_bf16_extractor_answers_and_keys_its_cache_apart(extractor) -> None:
    from latentsearch.models.bf16_linear import bf16_matmul_available
    from latentsearch.models.extractor import LatentEntityExtractor

    if not bf16_matmul_available():
        pytest.skip("this CPU has no bfloat16 matmul (AMX / AVX512-BF16)")
    fast = LatentEntityExtractor(bf16=True)
    assert ":bf16" in fast.fingerprint and fast.fingerprint != extractor.fingerprint
    values = fast.extract(QUESTIONS[:2], "biomedical claim", "anatomy")
    assert all(isinstance(v, list) for v in values) and any(values)
    probs = fast.option_probabilities(QUESTIONS[0], "biomedical claim", "anatomy", ["heart", "liver", "kidney"])
    assert sum(probs) == pytest.approx(1.0)


def test_bf16_setting_reads_old_booleans_and_refuses_what_it_cannot_do() -> None:
    from pydantic import ValidationError

    from latentsearch.config import ModelsConfig
    from latentsearch.models.factory import extractor_from_settings

    assert ModelsConfig().extractor_bf16 == "questions"
    assert ModelsConfig(extractor_bf16=True).extractor_bf16 == "all"
    assert ModelsConfig(extractor_bf16="false").extractor_bf16 == "off"
    with pytest.raises(ValidationError, match="'off', 'questions' or 'all'"):
        ModelsConfig(extractor_bf16="fast")
    with pytest.raises(ValidationError, match="pick one"):
        ModelsConfig(extractor_int8=True, extractor_bf16="all")
    with pytest.raises(ValueError, match="on 'cuda'.*'off' or 'questions'"):
        extractor_from_settings(ModelsConfig(extractor_bf16="all", device="cuda"))


def test_the_default_packs_bf16_for_questions_only(extractor) -> None:
    """`extractor_bf16 = "questions"`: ingest keeps float32 values (and their cache keys); the question extractor
    is bf16 where the CPU can, float32 where it cannot; int8 wins over the default."""
    from latentsearch.config import ModelsConfig
    from latentsearch.models.bf16_linear import bf16_matmul_available
    from latentsearch.models.factory import extractor_from_settings

    models = ModelsConfig()
    ingest = extractor_from_settings(models)
    assert ingest.bf16 is False and ingest.fingerprint == extractor.fingerprint
    question = extractor_from_settings(models, questions=True)
    assert question.bf16 is bf16_matmul_available()
    assert extractor_from_settings(models, questions=True) is question  # loaded once per process
    assert extractor_from_settings(ModelsConfig(extractor_bf16="off"), questions=True) is ingest
    assert extractor_from_settings(ModelsConfig(extractor_int8=True), questions=True).bf16 is False


def test_fingerprint_follows_the_adapter_weights(tmp_path: Path, extractor) -> None:
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(extractor.adapter, adapter)
    from latentsearch.models.extractor import _weights_digest

    before = _weights_digest(adapter)
    assert before == _weights_digest(adapter)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0")  # "retrained": other bytes, other size
    assert _weights_digest(adapter) != before


def test_embedded_search_runs_numpy_on_one_blas_thread(tmp_path: Path, monkeypatch) -> None:
    """OpenBLAS threads spin after a call and starve the next model call in the process: the engine's own numpy
    work runs with one BLAS thread, and the caller's setting is back afterwards."""
    import threadpoolctl

    from latentsearch.backends.base import BulkAction
    from latentsearch.backends.embedded import executor as ex
    from latentsearch.backends.embedded.backend import EmbeddedBackend

    seen: list[int] = []
    real = ex.knn_scores

    def spy(*args, **kwargs):
        seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "knn_scores", spy)
    backend = EmbeddedBackend(tmp_path / "db")
    backend.create_index("v", {"mappings": {"properties": {"v": {
        "type": "knn_vector", "dimension": 3, "method": {"name": "hnsw", "space_type": "l2", "engine": "lucene"}}}}})
    assert all(r.ok for r in backend.bulk("v", [BulkAction(str(i), {"v": [float(i), 1.0, 0.0]}) for i in range(3)]))
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    hits = backend.search("v", {"size": 2, "query": {"knn": {"v": {"vector": [0.0, 1.0, 0.0], "k": 2}}}})
    assert [h["_id"] for h in hits["hits"]["hits"]] == ["0", "1"]
    assert seen and set(seen) == {1}
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before
    backend.close()
