"""The seams between floors, as structural types: anything with these methods plugs in (a torch model,
an onnxruntime session, a remote endpoint, a LangChain object wrapped, a test's stand-in), and the
floors above depend on these shapes rather than on one implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Texts -> L2-normalised float32 vectors (n, dimension)."""

    name: str

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@runtime_checkable
class LatentExtractor(Protocol):
    """Texts -> the latent entities of one type each implies (LentEx); `fingerprint` keys the content cache."""

    @property
    def fingerprint(self) -> str: ...

    def extract(self, texts: Sequence[str], text_type: str, latent_entity_type: str,
                options: Sequence[str] | None = None) -> list[list[str]]: ...


@runtime_checkable
class Rewriter(Protocol):
    """A question -> hits with latent filters (query/rewriter.py's QueryRewriter)."""

    def search(self, text: str, **options: Any) -> Any: ...


@runtime_checkable
class ChatLLM(Protocol):
    """Chat messages -> one reply (the local SmolLM2, the model server, any OpenAI-compatible endpoint)."""

    name: str

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str: ...
