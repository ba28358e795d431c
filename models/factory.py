"""Settings in, models out: the one place that turns a configured model location into a loaded,
process-wide model. A folder written by `latentsearch export-onnx` selects the onnxruntime class,
anything else the PyTorch one; either way the model is loaded once per process (`registry.cached`).

    embedder = embedder_from_settings(settings.models)
    extractor = extractor_from_settings(settings.models)
"""

from __future__ import annotations

from pathlib import Path

from latentsearch.config import ModelsConfig
from latentsearch.models.embedder import Embedder
from latentsearch.models.extractor import LatentEntityExtractor
from latentsearch.models.llm import SMOLLM2
from latentsearch.models.onnx_manifest import is_onnx_export
from latentsearch.models.registry import cached


def get_embedder(name: str = "all-MiniLM-L6-v2", device: str = "cpu") -> Embedder:
    """The process-wide embedder for (name, device); an ONNX export folder gives the onnxruntime embedder."""
    if is_onnx_export(name):
        from latentsearch.models.onnx_runtime import OnnxEmbedder

        return cached(("onnx-embedder", name, device), lambda: OnnxEmbedder(name, device))  # type: ignore[return-value]
    return cached(("embedder", name, device), lambda: Embedder(name, device))


def get_extractor(model: str = SMOLLM2, adapter: str | Path | None = "default", device: str = "cpu",
                  **kwargs: int) -> LatentEntityExtractor:
    """The process-wide extractor for these settings. An `export-onnx` folder as `adapter` (the LLM with its
    adapter merged) or as `model` gives the onnxruntime extractor."""
    export = next((str(p) for p in (adapter, model) if p is not None and is_onnx_export(p)), None)
    if export is not None:
        from latentsearch.models.onnx_runtime import OnnxExtractor

        key = ("onnx-extractor", export, device, *(f"{k}={v}" for k, v in sorted(kwargs.items())))
        return cached(key, lambda: OnnxExtractor(export, device, **kwargs))
    key = ("extractor", model, str(adapter), device, *(f"{k}={v}" for k, v in sorted(kwargs.items())))
    return cached(key, lambda: LatentEntityExtractor(model, adapter, device, **kwargs))


def embedder_from_settings(models: ModelsConfig, device: str | None = None) -> Embedder:
    """The embedder `models.embedder` names, on `device` (default `models.device`)."""
    return get_embedder(models.embedder, device or models.device)


def extractor_from_settings(models: ModelsConfig, device: str | None = None, **kwargs: int) -> LatentEntityExtractor:
    """The latent-entity extractor `models.llm` + `models.extractor_adapter` name."""
    return get_extractor(models.llm, models.extractor_adapter, device or models.device, **kwargs)
