"""Adapter from `/mentions` to the per-mention vector model (NER Retriever: spans -> mid-layer V -> head).

`models/mention_head.py` owns the model: span detection, the LLM's value projection at a
middle block, and the trained projection head. Until that head is trained and installed, loading
raises `ModelNotFoundError`, which the route answers with 503 and its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentsearch.config import Settings
from latentsearch.onnx_export.serve.errors import FeatureUnavailableError


class MentionModel:
    """Texts -> mention dicts (start, end, text, vector); type names -> query vectors."""

    def __init__(self, vectorizer: Any):
        self.vectorizer = vectorizer
        self.name = vectorizer.fingerprint
        self.dimension = int(vectorizer.dimension)

    def encode_texts(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        return [[m.model_dump() for m in found] for found in self.vectorizer.vectorize(texts)]

    def embed_types(self, names: Sequence[str]) -> list[list[float]]:
        return self.vectorizer.embed_types(list(names)).tolist()


def load_mention_model(settings: Settings, device: str, head: Path | None = None) -> MentionModel:
    """The process-wide vectorizer (registry-cached) for `head` (default: the shipped head)."""
    try:
        from latentsearch.models.mention_head import ARTIFACT, get_vectorizer
    except ImportError as err:  # the issue-4 module is missing from this install
        raise FeatureUnavailableError(f"per-mention vectors are not available in this install: {err}") from err
    return MentionModel(get_vectorizer(head_path=head or ARTIFACT, device=device))
