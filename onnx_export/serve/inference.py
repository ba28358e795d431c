"""The batched model calls the server makes: plain synchronous functions of a list of inputs.

They run on each model's worker thread (batching.py); everything here takes a whole batch so one
forward pass serves many requests. Requests whose settings differ (sampling temperature, latent
type) are grouped inside the batch and each group runs as one call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
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


def stream_generate(lm: LoadedLM, item: ChatItem, emit: Callable[[str], None],
                    cancelled: Callable[[], bool] = lambda: False) -> ChatOutput:
    """One greedy or sampled answer, handing each new piece of text to `emit` as it is generated.

    The rules are `generate_batch`'s for one row (end-of-turn token, `max_tokens`, stop strings), so the
    pieces concatenate to exactly the text a non-streamed request gets. Text that could still turn into a
    stop string, and half a UTF-8 character, are held back until the next token decides them.
    `cancelled()` true (the client went away) ends generation at the next token."""
    import torch

    tok = lm.tokenizer
    enc = tok([chat_prompt(lm, item.messages)], return_tensors="pt", add_special_tokens=False).to(lm.device)
    state = _Stream(tok, int(enc["input_ids"].shape[1]), item, stop_token_ids(lm), emit, cancelled)
    sampling: dict[str, Any] = {"do_sample": False}
    if item.temperature > 0:
        sampling = {"do_sample": True, "temperature": item.temperature, "top_p": item.top_p, "top_k": 0}
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(state.stop_ids), 0)
    from transformers import StoppingCriteriaList

    with torch.inference_mode():
        lm.model.generate(**enc, max_new_tokens=item.max_tokens, num_beams=1, pad_token_id=pad,
                          eos_token_id=sorted(state.stop_ids) or None, stopping_criteria=StoppingCriteriaList([state]),
                          **sampling)
    return state.finish()


class _Stream:
    """A `StoppingCriteria` that sees every new token: decodes, emits the safe new text, decides the end."""

    def __init__(self, tok: Any, prompt_len: int, item: ChatItem, stop_ids: set[int], emit: Callable[[str], None],
                 cancelled: Callable[[], bool]):
        self.tok, self.prompt_len, self.item, self.stop_ids = tok, prompt_len, item, stop_ids
        self.emit, self.cancelled = emit, cancelled
        self.hold = max((len(s) for s in item.stops), default=1) - 1
        self.ids: list[int] = []
        self.sent = ""
        self.text = ""
        self.reason: str | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.reason is None:
            self._step(int(input_ids[0, -1]))
        return torch.full((input_ids.shape[0],), self.reason is not None, dtype=torch.bool, device=input_ids.device)

    def _step(self, token: int) -> None:
        if token in self.stop_ids:
            self.reason = "stop"
        else:
            self.ids.append(token)
            self.text = self.tok.decode(self.ids, skip_special_tokens=True)
            hits = [p for p in (self.text.find(s) for s in self.item.stops) if p >= 0]
            if hits:
                self.text, self.reason = self.text[: min(hits)], "stop"
            elif len(self.ids) >= self.item.max_tokens:
                self.reason = "length"
            elif self.cancelled():
                self.reason = "length"  # nobody reads it any more
        if self.reason is None:
            self._send(self.text[: len(self.text) - self.hold].rstrip("\ufffd"))

    def _send(self, safe: str) -> None:
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            self.emit(safe[len(self.sent):])
            self.sent = safe

    def finish(self) -> ChatOutput:
        self._send(self.text)
        return ChatOutput(self.text, self.prompt_len, len(self.ids), self.reason or "length")


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
