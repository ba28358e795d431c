"""The projection head over raw mention vectors and the type-aware vectorizer (NER Retriever).

Head: `Linear(d_v, 500) → SiLU → Dropout(0.1) → Linear(500, 500)`, outputs L2-normalised. Its
training lives in `latentsearch/lab/train_mention_head.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from latentsearch.models.llm import SMOLLM2
from latentsearch.models.mention_encoder import MentionEncoder, get_mention_encoder
from latentsearch.models.registry import ModelNotFoundError, cached
from latentsearch.models.spans import Span, get_span_detector

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "mention-head-smollm2"
OUT_DIM = 500


class HeadConfig(BaseModel):
    """Stored as config.json beside head.safetensors: what the head expects as input."""

    llm: str = SMOLLM2
    layer: int
    site: str = "v_proj"
    in_dim: int
    hidden: int = 500
    out_dim: int = OUT_DIM
    dropout: float = 0.1


def build_head(config: HeadConfig):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(config.in_dim, config.hidden), nn.SiLU(), nn.Dropout(config.dropout),
                         nn.Linear(config.hidden, config.out_dim))


def load_head(path: Path = ARTIFACT):
    """(head module in eval mode, config) from a folder with config.json + head.safetensors."""

    def build():
        from safetensors.torch import load_file

        cfg_path, weights = Path(path) / "config.json", Path(path) / "head.safetensors"
        if not weights.is_file() or not cfg_path.is_file():
            raise ModelNotFoundError(f"no mention head at {path}: run `latentsearch train mention-head`")
        config = HeadConfig.model_validate_json(cfg_path.read_text())
        head = build_head(config)
        head.load_state_dict(load_file(str(weights)))
        head.eval()
        return head, config

    return cached(("mention-head", str(Path(path).resolve())), build)


def project(head: Any, raw: np.ndarray) -> np.ndarray:
    """Raw vectors -> normalised head outputs (float32)."""
    import torch

    if len(raw) == 0:
        return np.zeros((0, head[-1].out_features), dtype=np.float32)
    with torch.inference_mode():
        out = torch.nn.functional.normalize(head(torch.from_numpy(np.asarray(raw, dtype=np.float32))), dim=-1)
    return out.numpy().astype(np.float32)


def normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class MentionVector(BaseModel):
    text: str
    start: int
    end: int
    vector: list[float]


class MentionVectorizer:
    """Spans + LLM vectors + head: texts -> typed mention vectors; type descriptions -> query vectors.
    `use_head=False` gives the raw (normalised) V vectors, the ablation of the evaluation."""

    def __init__(self, head_path: Path = ARTIFACT, device: str = "cpu", use_head: bool = True,
                 detector: str = "spacy"):
        self.head, self.config = load_head(head_path)
        self.use_head = use_head
        self.encoder = get_mention_encoder(self.config.llm, self.config.layer, self.config.site, device)  # type: ignore[arg-type]
        self.detector = get_span_detector(detector)
        self.dimension = self.config.out_dim if use_head else self.encoder.dimension
        digest = hashlib.sha256(Path(head_path, "head.safetensors").read_bytes()).hexdigest()[:12]
        self.fingerprint = f"{self.encoder.fingerprint}:{'head-' + digest if use_head else 'raw'}:{self.detector.name}"

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        return project(self.head, raw) if self.use_head else normalise(raw)

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> list[np.ndarray]:
        raws = self.encoder.encode(texts, spans)
        return [self._finish(r) for r in raws]

    def vectorize(self, texts: Sequence[str]) -> list[list[MentionVector]]:
        spans = self.detector.detect(texts)
        vectors = self.encode_spans(texts, spans)
        return [[MentionVector(text=s.text, start=s.start, end=s.end, vector=v.tolist()) for s, v in zip(sp, vs)]
                for sp, vs in zip(spans, vectors)]

    def embed_types(self, descriptions: Sequence[str]) -> np.ndarray:
        return self._finish(encode_type_names(self.encoder, descriptions))


def encode_type_names(encoder: MentionEncoder, names: Sequence[str]) -> np.ndarray:
    """Each type description as a one-span text (the whole string), through the mention path."""
    names = [n.strip() for n in names]
    if any(not n for n in names):
        raise ValueError("a type description must not be empty")
    raws = encoder.encode(names, [[Span(start=0, end=len(n), text=n, source="custom")] for n in names])
    return np.stack([r[0] for r in raws]) if raws else np.zeros((0, encoder.dimension), dtype=np.float32)


def get_vectorizer(head_path: Path = ARTIFACT, device: str = "cpu", use_head: bool = True) -> MentionVectorizer:
    return cached(("mention-vectorizer", str(head_path), device, str(use_head)),
                  lambda: MentionVectorizer(head_path, device, use_head))
