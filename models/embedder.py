"""Dense text embedder (sentence-transformers), loaded once per process via the registry."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from latentsearch.models.registry import resolve_model_path


class Embedder:
    """Batch text -> L2-normalised float32 vectors. Wraps a SentenceTransformer."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", device: str = "cpu"):
        self.name = name
        self.device = device
        self.path = resolve_model_path(name)
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.path, device=device)

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def max_tokens(self) -> int:
        """Longest input (in tokenizer tokens, special tokens included) the model reads."""
        return int(self.model.max_seq_length)

    @cached_property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
