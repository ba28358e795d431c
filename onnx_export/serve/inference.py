"""The batched model calls the server makes: plain synchronous functions of a list of inputs.

They run on each model's worker thread (batching.py); everything here takes a whole batch so one
forward pass serves many requests. Requests whose settings differ (sampling temperature, latent
type) are grouped inside the batch and each group runs as one call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentsearch.models.embedder import Embedder
from latentsearch.models.llm import LoadedLM

# ----- embeddings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray
    tokens: int


def embed_batch(embedder: Embedder, texts: list[str]) -> list[Embedded]:
    vectors = embedder.encode(texts, batch_size=max(1, len(texts)))
    ids = embedder.tokenizer(texts, truncation=True, max_length=embedder.max_tokens)["input_ids"]
    return [Embedded(v, len(t)) for v, t in zip(vectors, ids)]


# ----- chat -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatItem:
    messages: tuple[tuple[str, str], ...]  # (role, content): rendered with the model's template on the worker
    max_tokens: int
    temperature: float
    top_p: float
    stops: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


def chat_prompt(lm: LoadedLM, messages: Sequence[tuple[str, str]]) -> str:
    """Messages -> the model's own chat template, ready for the assistant turn."""
    turns = [{"role": role, "content": content} for role, content in messages]
    return lm.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def stop_token_ids(lm: LoadedLM) -> set[int]:
    """End-of-turn ids: the generation config's (SmolLM2: <|im_end|>) and the tokenizer's eos."""
    ids: set[int] = set()
    for value in (getattr(lm.model.generation_config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _group(items: Sequence[Any], key) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    return groups


def generate_batch(lm: LoadedLM, items: list[ChatItem]) -> list[ChatOutput]:
    """One `generate` per sampling setting: left-padded prompts, the longest budget, each row cut
    at its own end-of-turn token, `max_tokens` and stop strings."""
    import torch

    tok = lm.tokenizer
    stops = stop_token_ids(lm)
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(stops), 0)
    results: list[ChatOutput | None] = [None] * len(items)
    for (temperature, top_p), idx in _group(items, lambda it: (it.temperature, it.top_p)).items():
        prompts = [chat_prompt(lm, items[i].messages) for i in idx]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                  padding_side="left").to(lm.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        with torch.inference_mode():
            out = lm.model.generate(**enc, max_new_tokens=max(items[i].max_tokens for i in idx), num_beams=1,
                                    pad_token_id=pad, eos_token_id=sorted(stops) or None, **sampling)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(1).tolist()
        for row, i in enumerate(idx):
            item = items[i]
            ids = new[row]
            cut = next((j for j, t in enumerate(ids) if t in stops), None)
            finish = "stop"
            if cut is None or cut >= item.max_tokens:
                cut, finish = min(len(ids), item.max_tokens), "length"
            ids = ids[:cut]
            text = tok.decode(ids, skip_special_tokens=True)
            hits = [p for p in (text.find(s) for s in item.stops) if p >= 0]
            if hits:
                text, finish = text[: min(hits)], "stop"
            results[i] = ChatOutput(text, int(prompt_lens[row]), len(ids), finish)
    return results  # type: ignore[return-value]


# ----- latent entities ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractItem:
    text: str
    text_type: str
    type_name: str  # as worded in the prompt
    options: tuple[str, ...] | None = None


def extract_batch(extractor: Any, items: list[ExtractItem]) -> list[list[str]]:
    """Latent entity values per item; one extractor call per (text type, entity type, options)."""
    results: list[list[str]] = [[] for _ in items]
    for (text_type, type_name, options), idx in _group(
        items, lambda it: (it.text_type, it.type_name, it.options)
    ).items():
        values = extractor.extract([items[i].text for i in idx], text_type, type_name,
                                   options=list(options) if options else None)
        for i, v in zip(idx, values):
            results[i] = list(v)
    return results
