"""Training the NER Retriever projection head over raw mention vectors (the runtime head is in
`models/mention_head.py`).

Triplet loss: anchor = the type name encoded through the same path as a one-span text, positive = a
mention of that type, negative = a mention of another type (10 % hard negatives: other-type mentions
whose sentence BM25-matches the type name best). The LLM is frozen, so raw vectors are computed once
and cached; training the head then takes seconds.

    latentsearch train mention-head --wnut DATA/wnut17   # or set LATENTSEARCH_DATA_DIR=DATA
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from latentsearch.config import default_home
from latentsearch.models.llm import SMOLLM2
from latentsearch.models.mention_encoder import MentionEncoder, get_mention_encoder
from latentsearch.models.mention_head import ARTIFACT, HeadConfig, build_head, encode_type_names, normalise, project
from latentsearch.models.spans import Span, read_conll
from latentsearch.progress import progress_bar


class TrainConfig(BaseModel):
    llm: str = SMOLLM2
    layer: int = Field(..., description="Block whose v_proj is read (from the layer sweep)")
    site: str = "v_proj"
    wnut_train: Path = Field(..., description="WNUT-17 train CoNLL (wnut17train.conll)")
    wnut_dev: Path = Field(..., description="WNUT-17 dev CoNLL (emerging.dev.conll)")
    synthetic: Path | None = None  # default: latentsearch/lab/data/typed_mentions/typed_mentions.jsonl
    heldout_every: int = Field(10, description="Every n-th synthetic type is held out (zero-shot check); 0 = none")
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.3
    hard_fraction: float = 0.1
    hard_pool: int = 50
    seed: int = 7
    out_dir: Path = ARTIFACT


class Mentions(BaseModel):
    """A flat set of mentions with their raw vectors (cached on disk as .npz)."""

    model_config = {"arbitrary_types_allowed": True}

    contexts: list[str]
    types: list[str]
    source: list[str]
    raw: Any  # np.ndarray (n, d)


def encode_cached(encoder: MentionEncoder, key: str, texts: list[str], spans: list[list[Span]],
                   progress: bool) -> np.ndarray:
    """Raw vectors for every span, computed once per (encoder, data) and kept under the cache dir."""
    digest = hashlib.sha256(json.dumps([encoder.fingerprint, texts, [[(s.start, s.end) for s in sp] for sp in spans]]
                                       ).encode()).hexdigest()[:16]
    path = default_home() / "cache" / "mention-vectors" / f"{key}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    chunks: list[np.ndarray] = []
    step = 64
    with progress_bar(progress) as live:
        task = live.add_task(f"LLM vectors ({key})", total=len(texts)) if live else None
        for b in range(0, len(texts), step):
            chunks.extend(encoder.encode(texts[b : b + step], spans[b : b + step]))
            if live:
                live.update(task, advance=len(texts[b : b + step]))
    raw = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dimension), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, raw)
    return raw


def load_conll_mentions(encoder: MentionEncoder, path: Path, key: str, progress: bool) -> Mentions:
    sents = [s for s in read_conll(path) if s.spans]
    raw = encode_cached(encoder, key, [s.text for s in sents], [s.spans for s in sents], progress)
    return Mentions(contexts=[s.text for s in sents for _ in s.spans], types=[t for s in sents for t in s.types],
                    source=[key] * len(raw), raw=raw)


def load_synthetic_mentions(encoder: MentionEncoder, path: Path | None, progress: bool) -> Mentions:
    from latentsearch.lab import typed_mentions

    rows = typed_mentions.load(path or typed_mentions.JSONL)
    spans = [[Span(start=r.start, end=r.end, text=r.mention, source="gold")] for r in rows]
    raw = encode_cached(encoder, "typed_mentions", [r.text for r in rows], spans, progress)
    return Mentions(contexts=[r.text for r in rows], types=[r.type for r in rows], source=["synthetic"] * len(rows),
                    raw=raw)


_TOKEN = re.compile(r"\w+")


class BM25:
    """Okapi BM25 over a small collection, tokenised once (for choosing hard negatives)."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75):
        toks = [_TOKEN.findall(d.lower()) for d in docs]
        self.n = len(toks)
        lengths = np.array([len(t) for t in toks], dtype=np.float64)
        self.norm = k1 * (1 - b + b * lengths / max(lengths.mean() if self.n else 1.0, 1e-9))
        self.k1 = k1
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        acc: dict[str, dict[int, int]] = {}
        for i, t in enumerate(toks):
            for term, tf in Counter(t).items():
                acc.setdefault(term, {})[i] = tf
        for term, row in acc.items():
            self.postings[term] = (np.fromiter(row.keys(), dtype=np.int64), np.fromiter(row.values(), dtype=np.float64))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.n)
        for term in set(_TOKEN.findall(query.lower())):
            if term not in self.postings:
                continue
            docs, tf = self.postings[term]
            idf = math.log(1 + (self.n - len(docs) + 0.5) / (len(docs) + 0.5))
            out[docs] += idf * tf * (self.k1 + 1) / (tf + self.norm[docs])
        return out


def bm25_scores(query: str, docs: Sequence[str]) -> np.ndarray:
    return BM25(docs).scores(query)


def r_precision_mentions(anchors: np.ndarray, vectors: np.ndarray, types: Sequence[str],
                         names: Sequence[str]) -> dict[str, float]:
    """Mention-level R-Precision per type: rank all mentions by cosine to the type's anchor."""
    a, v = normalise(anchors), normalise(vectors)
    labels = np.asarray(types)
    out = {}
    for i, name in enumerate(names):
        rel = labels == name
        r = int(rel.sum())
        if r == 0:
            continue
        top = np.argsort(-(v @ a[i]))[:r]
        out[name] = float(rel[top].mean())
    return out


class TrainReport(BaseModel):
    config: dict[str, Any]
    train_mentions: int
    train_types: int
    heldout_types: list[str]
    dev_mentions: int
    best_epoch: int
    dev_r_precision_head: dict[str, float]
    dev_r_precision_raw: dict[str, float]
    heldout_r_precision_head: float | None
    heldout_r_precision_raw: float | None
    encode_seconds: float
    train_seconds: float
    machine: str


def train_head(cfg: TrainConfig, progress: bool = True) -> TrainReport:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    t0 = time.perf_counter()
    encoder = get_mention_encoder(cfg.llm, cfg.layer, cfg.site)  # type: ignore[arg-type]
    wnut = load_conll_mentions(encoder, cfg.wnut_train, "wnut17-train", progress)
    synth = load_synthetic_mentions(encoder, cfg.synthetic, progress)
    dev = load_conll_mentions(encoder, cfg.wnut_dev, "wnut17-dev", progress)
    synth_types = list(dict.fromkeys(synth.types))
    heldout = synth_types[cfg.heldout_every - 1 :: cfg.heldout_every] if cfg.heldout_every else []
    keep = [i for i, t in enumerate(synth.types) if t not in set(heldout)]
    ho_idx = [i for i, t in enumerate(synth.types) if t in set(heldout)]
    contexts = wnut.contexts + [synth.contexts[i] for i in keep]
    types = wnut.types + [synth.types[i] for i in keep]
    raw = np.concatenate([wnut.raw, synth.raw[keep]]).astype(np.float32)
    names = list(dict.fromkeys(types))
    dev_names = list(dict.fromkeys(dev.types))
    all_names = list(dict.fromkeys(names + dev_names + heldout))
    anchor_raw = encode_type_names(encoder, all_names)
    anchor_of = {n: i for i, n in enumerate(all_names)}
    encode_seconds = time.perf_counter() - t0

    by_type: dict[str, list[int]] = {}
    for i, t in enumerate(types):
        by_type.setdefault(t, []).append(i)
    hard: dict[str, list[int]] = {}
    bm25 = BM25(contexts)
    for name in names:
        s = bm25.scores(name)
        order = [i for i in np.argsort(-s) if types[i] != name and s[i] > 0][: cfg.hard_pool]
        hard[name] = order
    type_arr = np.asarray(types)

    head_cfg = HeadConfig(llm=cfg.llm, layer=cfg.layer, site=cfg.site, in_dim=raw.shape[1])
    head = build_head(head_cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1 - torch.nn.functional.cosine_similarity(x, y), margin=cfg.margin)
    X = torch.from_numpy(raw)
    A = torch.from_numpy(anchor_raw.astype(np.float32))

    def evaluate(model) -> tuple[dict[str, float], float | None]:
        model.eval()
        dev_rp = r_precision_mentions(project(model, anchor_raw[[anchor_of[n] for n in dev_names]]),
                                      project(model, dev.raw), dev.types, dev_names)
        ho = None
        if ho_idx:
            ho_rp = r_precision_mentions(project(model, anchor_raw[[anchor_of[n] for n in heldout]]),
                                         project(model, synth.raw[ho_idx]), [synth.types[i] for i in ho_idx], heldout)
            ho = float(np.mean(list(ho_rp.values())))
        return dev_rp, ho

    best = (-1.0, 0, None, None, None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: extra threads only spin, and on a shared CPU they cost 4x
    t1 = time.perf_counter()
    with progress_bar(progress) as live:
        task = live.add_task("train mention head", total=cfg.epochs) if live else None
        for epoch in range(1, cfg.epochs + 1):
            head.train()
            order = list(range(len(types)))
            rng.shuffle(order)
            for b in range(0, len(order), cfg.batch_size):
                pos = order[b : b + cfg.batch_size]
                neg = []
                for i in pos:
                    t = types[i]
                    if hard[t] and rng.random() < cfg.hard_fraction:
                        neg.append(rng.choice(hard[t]))
                    else:
                        while True:
                            j = rng.randrange(len(types))
                            if type_arr[j] != t:
                                break
                        neg.append(j)
                anc = A[[anchor_of[types[i]] for i in pos]]
                loss = loss_fn(head(anc), head(X[pos]), head(X[neg]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            dev_rp, ho = evaluate(head)
            macro = float(np.mean(list(dev_rp.values())))
            if macro > best[0]:
                best = (macro, epoch, {k: v.clone() for k, v in head.state_dict().items()}, dev_rp, ho)
            if live:
                live.update(task, advance=1, description=f"train mention head (dev macro R-P {macro:.3f}, "
                                                         f"best {best[0]:.3f} @ {best[1]})")
    train_seconds = time.perf_counter() - t1
    torch.set_num_threads(threads)
    head.load_state_dict(best[2])
    raw_dev = r_precision_mentions(anchor_raw[[anchor_of[n] for n in dev_names]], dev.raw, dev.types, dev_names)
    raw_ho = None
    if ho_idx:
        rp = r_precision_mentions(anchor_raw[[anchor_of[n] for n in heldout]], synth.raw[ho_idx],
                                  [synth.types[i] for i in ho_idx], heldout)
        raw_ho = float(np.mean(list(rp.values())))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(cfg.out_dir / "head.safetensors"))
    (cfg.out_dir / "config.json").write_text(head_cfg.model_dump_json(indent=2) + "\n")
    report = TrainReport(
        config=json.loads(cfg.model_dump_json()), train_mentions=len(types), train_types=len(names),
        heldout_types=heldout, dev_mentions=len(dev.types), best_epoch=best[1],
        dev_r_precision_head={k: round(v, 4) for k, v in best[3].items()},
        dev_r_precision_raw={k: round(v, 4) for k, v in raw_dev.items()},
        heldout_r_precision_head=None if best[4] is None else round(best[4], 4),
        heldout_r_precision_raw=None if raw_ho is None else round(raw_ho, 4),
        encode_seconds=round(encode_seconds, 1), train_seconds=round(train_seconds, 1),
        machine=f"{platform.machine()} {platform.processor() or ''} torch threads={torch.get_num_threads()}".strip(),
    )
    (cfg.out_dir / "train_metrics.json").write_text(report.model_dump_json(indent=2) + "\n")
    return report
