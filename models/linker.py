"""Entity linking in the INSGENEL-R way: retrieve candidates cheaply, generate only where ambiguous.

Per mention: candidates come from the KB's alias index (exact normalised surface form) and a light
dense retriever (MiniLM over `name: description`). The decision rule copies the answer without the
LLM when there is one alias candidate, or, with no alias hit, one clearly dominant dense candidate
(score >= `dense_min` and a `margin` over the runner-up). Only the remaining, ambiguous mentions go
to the generative model, whose greedy output is constrained token by token by a prefix tree (trie)
of the candidates' labels: logits outside the trie are masked, single-child steps are copied
without scoring, so it can only ever write a valid candidate (no free text, no beam search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from latentsearch.models.kb import KBEntity, KnowledgeBase, load_kb
from latentsearch.models.registry import cached
from latentsearch.models.spans import Span

Method = Literal["alias", "dense", "llm"]


class Link(BaseModel):
    """One linked mention; `model_dump(include=LINK_FIELDS)` is the stored nested `links` object."""

    mention: str
    start: int
    end: int
    entity_id: str
    score: float = Field(description="alias copy: 1.0; dense copy: cosine; LLM: probability of the constrained path")
    method: Method
    candidates: int = Field(description="How many candidates the decision saw")


LINK_FIELDS = {"mention", "start", "end", "entity_id", "score"}


@dataclass
class LinkStats:
    mentions: int = 0
    linked: int = 0
    llm_calls: int = 0
    llm_forward_passes: int = 0
    by_method: dict[str, int] = field(default_factory=lambda: {"alias": 0, "dense": 0, "llm": 0, "nil": 0})


class DenseEntityRetriever:
    """MiniLM vectors of every KB entity's `name: description`, searched by exact cosine (KBs here are small)."""

    def __init__(self, kb: KnowledgeBase, embedder_name: str = "all-MiniLM-L6-v2", device: str = "cpu"):
        from latentsearch.models.factory import get_embedder

        self.kb = kb
        self.embedder = get_embedder(embedder_name, device)
        self.matrix = self.embedder.encode([e.embedding_text() for e in kb.entities])
        self.row = {e.id: i for i, e in enumerate(kb.entities)}

    def rank(self, context: str, entities: Sequence[KBEntity]) -> list[KBEntity]:
        """Candidates ordered by cosine of the mention's context to `name: description`, best first:
        the order the LLM sees them in (a small LM leans on option order, so the likeliest goes first)."""
        q = self.embedder.encode([context])[0]
        sims = self.matrix[[self.row[e.id] for e in entities]] @ q
        return [entities[i] for i in np.argsort(-sims, kind="stable")]

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[KBEntity, float]]]:
        if not queries:
            return []
        q = self.embedder.encode(list(queries))
        sims = q @ self.matrix.T
        k = min(k, len(self.kb))
        out = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top])]
            out.append([(self.kb.entities[i], float(row[i])) for i in top])
        return out


class _Node:
    __slots__ = ("children", "entity")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.entity: KBEntity | None = None


def build_trie(sequences: Sequence[tuple[list[int], KBEntity]]) -> _Node:
    """Prefix tree over token-id sequences (each ending in the end-of-turn token) -> entity at the leaf."""
    root = _Node()
    for ids, entity in sequences:
        node = root
        for t in ids:
            node = node.children.setdefault(t, _Node())
        if node.entity is None:  # identical labels: the first (higher-ranked) candidate keeps the leaf
            node.entity = entity
    return root


PROMPT = ("Text: {context}\n\nIn this text, which entity does \"{mention}\" refer to? Options:\n{options}\n"
          "Answer with one option exactly as written.")


class TrieDisambiguator:
    """Greedy decoding of a causal LM restricted to a trie of candidate labels."""

    def __init__(self, llm: str = "SmolLM2-135M-Instruct", device: str = "cpu", context_chars: int = 300):
        from latentsearch.models.llm import load_llm

        self.lm = load_llm(llm, device)
        self.tok = self.lm.tokenizer
        self.context_chars = context_chars
        end = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.end_id = end if isinstance(end, int) and end != self.tok.unk_token_id else self.tok.eos_token_id

    def prompt_ids(self, text: str, span: Span, candidates: Sequence[KBEntity]) -> list[int]:
        lo, hi = max(0, span.start - self.context_chars), min(len(text), span.end + self.context_chars)
        options = "\n".join(f"- {c.label}: {c.description}" if c.description else f"- {c.label}" for c in candidates)
        user = PROMPT.format(context=text[lo:hi], mention=span.text, options=options)
        if getattr(self.tok, "chat_template", None):
            return list(self.tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                                     tokenize=True, return_dict=False))
        return self.tok(user + "\nAnswer: ", add_special_tokens=False).input_ids

    def choose(self, text: str, span: Span, candidates: Sequence[KBEntity]) -> tuple[KBEntity, float, int]:
        """(chosen entity, probability of its path under the masked distribution, forward passes)."""
        import torch

        seqs = [(self.tok(c.label, add_special_tokens=False).input_ids + [self.end_id], c) for c in candidates]
        node = build_trie(seqs)
        model = self.lm.model
        pending = self.prompt_ids(text, span, candidates)
        past, logprob, passes = None, 0.0, 0
        with torch.inference_mode():
            while node.entity is None or node.children:
                if len(node.children) == 1:  # the trie leaves one continuation: copy it, no scoring needed
                    token = next(iter(node.children))
                else:
                    ids = torch.tensor([pending], device=self.lm.device)
                    out = model(input_ids=ids, past_key_values=past, use_cache=True)
                    passes += 1
                    past, pending = out.past_key_values, []
                    logits = out.logits[0, -1].float()
                    allowed = torch.tensor(list(node.children), device=logits.device)
                    masked = torch.log_softmax(logits[allowed], dim=-1)  # mask: only trie children compete
                    best = int(torch.argmax(masked))
                    token = int(allowed[best])
                    logprob += float(masked[best])
                pending.append(token)
                node = node.children[token]
                if token == self.end_id:
                    break
        assert node.entity is not None, "trie walk ended off a leaf"
        return node.entity, math.exp(logprob), passes


class EntityLinker:
    """Candidate retrieval + decision rule + trie-constrained disambiguation over one KB."""

    def __init__(self, kb: KnowledgeBase, *, llm: str = "SmolLM2-135M-Instruct", device: str = "cpu",
                 embedder: str = "all-MiniLM-L6-v2", k: int = 5, dense_min: float = 0.6, margin: float = 0.1,
                 use_llm: bool = True, context_chars: int = 300):
        self.kb = kb
        self.use_llm, self.context_chars = use_llm, context_chars
        self.llm_name, self.device = llm, device
        self.k, self.dense_min, self.margin = k, dense_min, margin
        self.retriever = DenseEntityRetriever(kb, embedder, device)
        self._disambiguator: TrieDisambiguator | None = None
        self.stats = LinkStats()

    @property
    def disambiguator(self) -> TrieDisambiguator:
        if self._disambiguator is None:  # loaded on the first ambiguous mention only
            self._disambiguator = cached(("trie-disambiguator", self.llm_name, self.device),
                                         lambda: TrieDisambiguator(self.llm_name, self.device))
        return self._disambiguator

    @property
    def fingerprint(self) -> str:
        return f"{self.kb.fingerprint}:{self.llm_name}:{self.k}:{self.dense_min}:{self.margin}"

    def link_spans(self, text: str, spans: Sequence[Span], *, shortcut: bool = True) -> list[Link]:
        """Links for given mention spans of one text; `shortcut=False` sends every mention with a
        candidate to the LLM (the no-retriever-shortcut baseline)."""
        dense_all = self.retriever.search([s.text for s in spans], self.k)
        links: list[Link] = []
        for span, dense in zip(spans, dense_all, strict=True):
            self.stats.mentions += 1
            alias = self.kb.lookup(span.text)
            link = self._decide(text, span, alias, dense, shortcut)
            if link is None:
                self.stats.by_method["nil"] += 1
                continue
            self.stats.linked += 1
            self.stats.by_method[link.method] += 1
            links.append(link)
        return links

    def _decide(self, text: str, span: Span, alias: list[KBEntity], dense: list[tuple[KBEntity, float]],
                shortcut: bool) -> Link | None:
        base = {"mention": span.text, "start": span.start, "end": span.end}
        if shortcut:
            if len(alias) == 1:
                return Link(**base, entity_id=alias[0].id, score=1.0, method="alias", candidates=1)
            if not alias:
                strong = [(e, s) for e, s in dense if s >= self.dense_min]
                if not strong:
                    return None  # NIL: nothing in the KB looks like this mention
                runner_up = strong[1][1] if len(strong) > 1 else -1.0
                if strong[0][1] - runner_up >= self.margin:
                    return Link(**base, entity_id=strong[0][0].id, score=strong[0][1], method="dense", candidates=1)
                pool = [e for e, _ in strong]
            else:
                pool = alias  # a decision span: several entities share this surface form
        else:  # no shortcut: the LLM decides every mention among alias hits + the dense top-k, unthresholded
            ids = {e.id for e in alias}
            pool = list(alias) + [e for e, _ in dense if e.id not in ids]
            if not pool:
                return None
        context = text[max(0, span.start - self.context_chars): span.end + self.context_chars]
        pool = self.retriever.rank(context, pool)
        if not self.use_llm:  # retriever-only ablation: the best context match wins
            return Link(**base, entity_id=pool[0].id, score=0.0, method="dense", candidates=len(pool))
        self.stats.llm_calls += 1
        entity, prob, passes = self.disambiguator.choose(text, span, pool)
        self.stats.llm_forward_passes += passes
        return Link(**base, entity_id=entity.id, score=prob, method="llm", candidates=len(pool))

    def link(self, texts: Sequence[str], spans: Sequence[Sequence[Span]] | None = None, *,
             shortcut: bool = True) -> list[list[Link]]:
        """Links per text; spans default to the spaCy detector's (models/spans.py)."""
        if spans is None:
            from latentsearch.models.spans import get_span_detector

            spans = get_span_detector().detect(texts)
        return [self.link_spans(t, s, shortcut=shortcut) for t, s in zip(texts, spans, strict=True)]


def get_linker(kb_path: str | Path, *, llm: str = "SmolLM2-135M-Instruct", device: str = "cpu",
               k: int = 5) -> EntityLinker:
    """The process-wide linker for one KB file (its entity vectors are computed once)."""
    path = Path(kb_path).expanduser().resolve()
    stamp = str(path.stat().st_mtime_ns) if path.is_file() else "missing"
    return cached(("entity-linker", str(path), stamp, llm, device, str(k)),
                  lambda: EntityLinker(load_kb(path), llm=llm, device=device, k=k))


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started
