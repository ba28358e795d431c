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
    from latentsearch.models.extractor import DEFAULT_ADAPTER

    assert adapter_prompt_format(DEFAULT_ADAPTER) == "instruction-first"  # the shipped adapter predates the file
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
