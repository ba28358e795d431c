"""Shared-prefix extraction: the text-first prompt format, its record in the adapter folder, and the KV-cache
reuse that must give exactly what one `extract` per type gives (same prompts, same greedy decoding)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from latentsearch.models.extractor import adapter_prompt_format, message_parts, user_message

TEXT = "Metformin lowered HbA1c in adults with poorly controlled glucose."


def test_instruction_first_message_is_the_original_one() -> None:
    assert user_message(TEXT, "biomedical abstract", "disease") == (
        "From the given biomedical abstract, determine the disease.\n\nBiomedical abstract: " + TEXT)


def test_text_first_puts_the_instruction_last() -> None:
    head, tail = message_parts(TEXT, "biomedical abstract", "disease", prompt_format="text-first")
    assert head == "Biomedical abstract: " + TEXT
    assert tail == "\n\nFrom the given biomedical abstract, determine the disease."
    other, _ = message_parts(TEXT, "biomedical abstract", "drug", prompt_format="text-first")
    assert other == head  # every type of a text shares the head


def test_unknown_prompt_format_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="instruction-first, text-first"):
        user_message(TEXT, "biomedical abstract", "disease", prompt_format="type-first")


def test_adapter_folder_records_its_format(tmp_path: Path) -> None:
    from latentsearch.models.extractor import DEFAULT_ADAPTER, INSTRUCTION_FIRST_ADAPTER

    assert adapter_prompt_format(DEFAULT_ADAPTER) == "text-first"  # the default: shared-prefix extraction
    assert adapter_prompt_format(INSTRUCTION_FIRST_ADAPTER) == "instruction-first"  # predates the file
    (tmp_path / "lentex.json").write_text(json.dumps({"prompt_format": "text-first"}))
    assert adapter_prompt_format(tmp_path) == "text-first"


def test_training_renders_the_text_first_format() -> None:
    from latentsearch.lab.lentex_data import load_split
    from latentsearch.lab.train_extractor import varied_message

    ex = load_split("test_seen")[0]
    msg = varied_message(ex, random.Random(0), "text-first")
    assert msg.startswith(f"{ex.text_type[:1].upper()}{ex.text_type[1:]}: {ex.text.strip()}")
    assert ex.latent_entity_type in msg[len(ex.text.strip()):]


def test_shared_prefix_gives_what_one_extract_per_type_gives(scifact_sample: Path) -> None:
    from latentsearch.models.extractor import LatentEntityExtractor

    docs = [json.loads(line) for line in scifact_sample.read_text().splitlines()[:2]]
    texts = [d["text"][:400] for d in docs]
    ex = LatentEntityExtractor(prompt_format="text-first")  # the shipped adapter, text-first prompts
    tok = ex.lm.tokenizer
    prefix, suffix = ex.prompt_parts(texts[0], "biomedical abstract", "disease")
    assert ex._ids(prefix) + ex._ids(suffix) == tok(prefix + suffix, add_special_tokens=False)["input_ids"]
    types = [("disease", None), ("anatomical term", None)]
    per_type = [ex.extract(texts, "biomedical abstract", name) for name, _ in types]
    assert ex.extract_types(texts, "biomedical abstract", types) == per_type
    assert any(v for row in per_type for v in row)


def test_shared_prefix_option_scoring_matches_the_full_prompts(scifact_sample: Path) -> None:
    from latentsearch.models.extractor import LatentEntityExtractor

    texts = [json.loads(line)["text"][:300] for line in scifact_sample.read_text().splitlines()[2:4]]
    options = ["cancer", "diabetes", "infection", "heart disease"]
    ex = LatentEntityExtractor(prompt_format="text-first")
    shared = ex.choose(texts, "biomedical abstract", "disease", options)  # prefix once, its cache per option
    prompts = [ex.prompt(t, "biomedical abstract", "disease", 0, options) for t in texts]
    assert shared == [_score_full(ex, p, options) for p in prompts]  # whole prompt + option per row


def _score_full(ex, prompt: str, options: list[str]) -> str:
    """The original scorer on one given prompt: every option appended, mean token log-likelihood."""
    import torch

    tok = ex.lm.tokenizer
    tok.padding_side = "right"
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    enc = tok([prompt + o + tok.eos_token for o in options], return_tensors="pt", padding=True,
              add_special_tokens=False)
    with torch.inference_mode():
        logits = ex.lm.model(**enc).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, enc["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = enc["attention_mask"][:, 1:].clone()
    mask[:, : n_prompt - 1] = 0
    return options[int(((logp * mask).sum(1) / mask.sum(1)).argmax())]


def test_early_stop_decoding_gives_what_generate_gives(scifact_sample: Path) -> None:
    """Rows leave the batch at their first answer line; the values equal transformers' `generate` (greedy, every
    row to the longest answer's length), on both paths, and the batch of mixed lengths comes back in order."""
    from latentsearch.models.extractor import LatentEntityExtractor

    docs = [json.loads(line) for line in scifact_sample.read_text().splitlines()[:6]]
    texts = [d["title"] for d in docs[:3]] + [d["text"][:300] for d in docs[3:]]
    types = [("disease", None), ("anatomical term", None)]
    for fmt in ("instruction-first", "text-first"):
        ex = LatentEntityExtractor(prompt_format=fmt, batch_size=4)
        fast = ex.extract_types(texts, "biomedical abstract", types)
        ex.early_stop = False
        assert ex.extract_types(texts, "biomedical abstract", types) == fast, fmt
    # raw generation without `first_line` runs to the end token, like generate
    prompts = [ex.prompt(t, "biomedical abstract", "disease") for t in texts[:2]]
    ex.early_stop = False
    slow = ex.generate(prompts)
    ex.early_stop = True
    assert ex.generate(prompts) == slow


def test_token_classes_mark_line_breaks_and_content() -> None:
    from latentsearch.models.extractor import LatentEntityExtractor, _token_classes

    tok = LatentEntityExtractor().lm.tokenizer
    newline, content = _token_classes(tok)
    nl = tok("\n", add_special_tokens=False)["input_ids"][0]
    word = tok(" heart", add_special_tokens=False)["input_ids"][0]
    assert newline[nl] and not content[nl]
    assert content[word] and not newline[word]
    assert not content[tok.eos_token_id] and not newline[tok.eos_token_id]
