"""Settings in, models out: the one place that turns a configured model location into a loaded,
process-wide model. A folder written by `latentsearch export-onnx` selects the onnxruntime class,
anything else the PyTorch one; either way the model is loaded once per process (`registry.cached`).

    embedder = embedder_from_settings(settings.models)
    extractor = extractor_from_settings(settings.models)
"""

from __future__ import annotations

import hashlib
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


def extractor_name(models: ModelsConfig) -> str:
    """`<llm>+<adapter folder>` (or the bare LLM name): what `latentsearch serve` calls its extractor model,
    and the default `models.extractor_model` of a remote extractor."""
    adapter = models.extractor_adapter
    if adapter == "none":
        return models.llm
    from latentsearch.models.extractor import DEFAULT_ADAPTER

    return f"{models.llm}+{DEFAULT_ADAPTER.name if adapter == 'default' else Path(adapter).name}"


def extractor_from_settings(models: ModelsConfig, device: str | None = None, *, questions: bool = False,
                            **kwargs: int) -> LatentEntityExtractor:
    """The latent-entity extractor `models.llm` + `models.extractor_adapter` name, or, with
    `models.extractor_url`, the remote one calling that endpoint (one client per process).
    `questions`: the one that reads questions (bf16 under the default `extractor_bf16 = "questions"`)."""
    if models.extractor_url:
        from latentsearch.models.remote_extractor import RemoteExtractor

        model = models.extractor_model or extractor_name(models)
        key = models.extractor_api_key.get_secret_value() if models.extractor_api_key else None
        kwargs.pop("batch_size", None)
        key_id = hashlib.sha256(key.encode()).hexdigest()[:8] if key else "none"  # never the secret itself
        cache_key = ("remote-extractor", models.extractor_url, model, key_id, str(models.extractor_concurrency),
                     *(f"{k}={v}" for k, v in sorted(kwargs.items())))
        fmt = _prompt_format(models.extractor_adapter)
        return cached((*cache_key, fmt), lambda: RemoteExtractor(  # type: ignore[return-value]
            models.extractor_url, model, key, models.extractor_concurrency,  # type: ignore[arg-type]
            tokenizer=_tokenizer(models.llm), prompt_format=fmt, **kwargs))
    device = device or models.device
    if models.extractor_int8:
        kwargs["int8"] = True  # type: ignore[assignment]
    elif _bf16(models, device, questions):
        kwargs["bf16"] = True  # type: ignore[assignment]
    return get_extractor(models.llm, models.extractor_adapter, device, **kwargs)


def _bf16(models: ModelsConfig, device: str, questions: bool) -> bool:
    """Whether this extractor packs its Linear layers in bfloat16: always with `all` (an error where it cannot);
    with `questions`, for the question extractor where it can (PyTorch on a CPU with bf16 matmuls), since
    the question values it gives retrieve as well as float32's (README, question latency)."""
    onnx = any(is_onnx_export(p) for p in (models.extractor_adapter, models.llm))
    if models.extractor_bf16 == "all":
        if onnx or device != "cpu":
            raise ValueError(f"extractor_bf16 = 'all' packs the PyTorch extractor's Linear layers on the CPU; this "
                             f"extractor is {'an ONNX export' if onnx else f'on {device!r}'}: set it to 'off' or "
                             f"'questions'")
        return True
    if models.extractor_bf16 == "off" or not questions or onnx or device != "cpu":
        return False
    from latentsearch.models.bf16_linear import bf16_matmul_available

    return bf16_matmul_available()


def _prompt_format(adapter: str) -> str:
    """The prompt format of the adapter the endpoint serves, read from the same folder here (its lentex.json);
    an adapter this machine does not have: instruction-first (the original LentEx prompt)."""
    from latentsearch.models.extractor import DEFAULT_ADAPTER, adapter_prompt_format

    folder = DEFAULT_ADAPTER if adapter == "default" else None if adapter == "none" else Path(adapter).expanduser()
    return adapter_prompt_format(folder if folder is not None and folder.is_dir() else None)


def _tokenizer(llm: str):
    """The LLM's tokenizer if it is installed here (texts are clipped exactly like locally), else None."""
    try:
        from transformers import AutoTokenizer

        from latentsearch.models.llm import resolve_llm_path

        return AutoTokenizer.from_pretrained(str(resolve_llm_path(llm)))
    except Exception:  # a hosted model this machine does not have: clip by characters
        return None
