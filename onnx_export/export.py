"""Export latentsearch's models to ONNX, one sub-folder per model plus a manifest.

    export(Path("onnx"), what=["embedder", "extractor"])

* embedder: the sentence-transformers model with its pooling and L2 normalisation *inside* the graph
  (token ids in, unit vectors out), so a client needs only the tokenizer and one session call.
  TorchScript-based `torch.onnx.export` (dynamo=False): it handles BERT-style encoders without the
  extra `onnxscript` dependency.
* extractor: the LentEx LLM with its LoRA adapter merged, exported by optimum-onnx as
  `text-generation-with-past` (KV cache inputs/outputs), so `ORTModelForCausalLM.generate` decodes
  greedily exactly like the PyTorch model.
* mentions: the mention encoder truncated after its block with the projection head fused in
  (token ids + span-end positions in, projected vectors out); needs `latentsearch.models.mention_encoder`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentsearch.models.onnx_manifest import (
    MANIFEST_NAME,
    ROLES,
    ExportedModel,
    OnnxManifest,
    Role,
    TensorSpec,
    fingerprint_files,
    load_manifest,
    weight_files,
)

log = logging.getLogger(__name__)
DEFAULT_OPSET = 17
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 16: "bfloat16"}


class ExportError(RuntimeError):
    pass


@contextlib.contextmanager
def _quiet_tracing():
    """The tracer warns about every Python-level constant and shape read in transformers' code: all expected
    for a fixed graph (parity is tested), and noise on a user's terminal."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(advanced indexing|tied weights|is_causal).*")
        yield


def graph_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file, read without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        shape: list[int | str] = [d.dim_param or d.dim_value for d in t.shape.dim]
        return TensorSpec(name=value.name, dtype=_ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), shape=shape)

    return [spec(v) for v in model.graph.input if v.name not in init], [spec(v) for v in model.graph.output]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("latentsearch", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------ embedder


def _pooled_encoder(st_model: Any) -> tuple[Any, str]:
    """A torch module: transformer -> pooling -> L2 normalisation (what `Embedder.encode` returns)."""
    import torch

    transformer, pooling = st_model[0], st_model[1] if len(st_model) > 1 else None
    mode = "mean"
    if pooling is not None:
        cfg = pooling.get_config_dict()
        mode = cfg.get("pooling_mode") or next(  # sentence-transformers 5.x names it; 2.x-4.x used flags
            (m for m in ("cls", "max", "mean") if cfg.get(f"pooling_mode_{m}_token{'s' if m != 'cls' else ''}")), "?"
        )
        if mode not in ("mean", "cls", "max"):
            raise ExportError(f"unsupported pooling {cfg}: only mean, cls and max pooling are exported")

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = transformer.auto_model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if mode == "cls":
                pooled = hidden[:, 0]
            elif mode == "max":
                pooled = (hidden + (mask - 1.0) * 1e9).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return PooledEncoder().eval(), mode


def _fix_output_dim(path: Path, dimension: int) -> None:
    """Name the vector width in the graph's output shape (the tracer leaves an anonymous symbol)."""
    import onnx

    model = onnx.load(str(path))
    dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = dimension
    onnx.save(model, str(path))


def export_embedder(out: Path, name: str = "all-MiniLM-L6-v2", opset: int = DEFAULT_OPSET) -> ExportedModel:
    """sentence-transformers model -> `out/embedder/model.onnx` (token ids in, unit vectors out)."""
    import torch

    from latentsearch.models.embedder import Embedder

    emb = Embedder(name, "cpu")  # a private copy: export must not touch the process-wide one
    # eager attention traces to plain MatMul/Softmax ops that every onnxruntime build runs
    emb.model[0].auto_model.config._attn_implementation = "eager"
    module, pooling = _pooled_encoder(emb.model)
    folder = out / "embedder"
    folder.mkdir(parents=True, exist_ok=True)
    tok = emb.tokenizer
    sample = tok(["an example sentence", "a second, longer example sentence"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic["sentence_embedding"] = {0: "batch"}
    with torch.inference_mode(), _quiet_tracing():
        torch.onnx.export(
            module, tuple(sample[n] for n in names), str(folder / "model.onnx"), input_names=names,
            output_names=["sentence_embedding"], dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )
    tok.save_pretrained(str(folder))
    _fix_output_dim(folder / "model.onnx", emb.dimension)
    inputs, outputs = graph_io(folder / "model.onnx")
    return ExportedModel(
        role="embedder", folder="embedder", files=["model.onnx"], source=name,
        source_fingerprint=fingerprint_files(weight_files(emb.path)),
        exporter="torch.onnx.export (TorchScript, dynamo=False) of transformer + pooling + L2 normalisation",
        opset=opset, inputs=inputs, outputs=outputs,
        extra={"dimension": emb.dimension, "max_tokens": emb.max_tokens, "pooling": pooling, "normalized": True},
    )


# ------------------------------------------------------------------ extractor


def export_extractor(out: Path, model: str = "SmolLM2-135M-Instruct", adapter: str | Path | None = "default",
                     opset: int = DEFAULT_OPSET) -> ExportedModel:
    """LentEx LLM (LoRA merged) -> `out/extractor/model.onnx` with KV-cache inputs/outputs (optimum-onnx)."""
    from optimum.exporters.onnx import main_export

    from latentsearch.models.extractor import LatentEntityExtractor
    from latentsearch.models.llm import resolve_llm_path

    extractor = LatentEntityExtractor(model, adapter, "cpu")  # merges the adapter into a private copy
    folder = out / "extractor"
    with tempfile.TemporaryDirectory(prefix="latentsearch-merged-") as tmp:
        extractor.lm.model.save_pretrained(tmp, safe_serialization=True)
        extractor.lm.tokenizer.save_pretrained(tmp)
        with _quiet_tracing():
            main_export(tmp, output=str(folder), task="text-generation-with-past", opset=opset, device="cpu",
                        do_validation=False, library_name="transformers")
    base_weights = weight_files(resolve_llm_path(model))
    inputs, outputs = graph_io(folder / "model.onnx")
    files = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" or p.name.endswith(".onnx_data"))
    return ExportedModel(
        role="extractor", folder="extractor", files=["model.onnx", *[f for f in files if f != "model.onnx"]],
        source=model, adapter=str(extractor.adapter) if extractor.adapter else None,
        source_fingerprint=fingerprint_files(base_weights, extra=extractor.fingerprint),
        exporter="optimum-onnx main_export task=text-generation-with-past (LoRA merged first)",
        opset=opset, inputs=inputs, outputs=outputs,
        extra={"extractor_fingerprint": extractor.fingerprint, "eos_token_id": extractor.lm.tokenizer.eos_token_id},
    )


# ------------------------------------------------------------------ mention encoder


def _mention_graph(head_path: Path) -> tuple[Any, Any, Any]:
    """(module, head config, tokenizer): token ids + span-end positions -> L2-normalised head outputs.

    A private copy of the LLM keeps blocks 0..L only; a forward hook captures the site's output of block L
    (what `MentionEncoder` reads), the span-end rows are gathered, and the projection head is applied."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentsearch.models.llm import resolve_llm_path
    from latentsearch.models.mention_encoder import decoder_layers, site_module
    from latentsearch.models.mention_head import load_head
    from latentsearch.models.registry import ModelNotFoundError

    try:
        head, cfg = load_head(head_path)
    except ModelNotFoundError as err:
        raise ExportError(str(err)) from None
    path = resolve_llm_path(cfg.llm)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    base = model.model
    base.layers = torch.nn.ModuleList(list(decoder_layers(model))[: cfg.layer + 1])  # nothing after block L
    site = site_module(model, cfg.layer, cfg.site)  # type: ignore[arg-type]

    class MentionGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base, self.head, self.site = base, head, site
            self.captured: list[Any] = []
            self.site.register_forward_hook(lambda _m, _i, o: self.captured.append(o[0] if isinstance(o, tuple) else o))

        def forward(self, input_ids, attention_mask, span_ends):  # type: ignore[no-untyped-def]
            self.captured.clear()
            # a ready 4-D additive mask (causal AND not padding): transformers' own mask builder uses vmap,
            # which the TorchScript tracer cannot follow; a 4-D mask is passed through as is
            n = input_ids.shape[1]
            causal = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
            keep = causal[None, None] & attention_mask[:, None, None, :].bool()
            mask = torch.zeros(keep.shape, dtype=torch.float32).masked_fill(~keep, torch.finfo(torch.float32).min)
            self.base(input_ids=input_ids, attention_mask=mask, use_cache=False)
            hidden = self.captured[-1]  # (batch, tokens, d) at block L
            rows = torch.gather(hidden, 1, span_ends.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
            return torch.nn.functional.normalize(self.head(rows), dim=-1)

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:  # as load_llm does; saved with the export so the runtime pads the same way
        tokenizer.pad_token = tokenizer.eos_token
    return MentionGraph().eval(), cfg, tokenizer


def export_mentions(out: Path, head_path: str | Path | None = None, opset: int = DEFAULT_OPSET) -> ExportedModel:
    """Mention encoder (LLM truncated after block L + projection head) -> `out/mentions/model.onnx`:
    `input_ids`, `attention_mask` (right padding) and `span_ends` (batch, spans: token index of each span's
    last token, from the tokenizer's offsets) in, `mention_vectors` (batch, spans, out_dim) out."""
    import torch

    from latentsearch.models.llm import resolve_llm_path
    from latentsearch.models.mention_head import ARTIFACT

    head_path = Path(head_path) if head_path else ARTIFACT
    module, cfg, tok = _mention_graph(head_path)
    folder = out / "mentions"
    folder.mkdir(parents=True, exist_ok=True)
    enc = tok(["Aspirin was given in Boston.", "Ibuprofen"], padding=True, return_tensors="pt", padding_side="right")
    ends = torch.tensor([[0, 3], [1, 1]], dtype=torch.int64)
    with torch.inference_mode(), _quiet_tracing():
        torch.onnx.export(
            module, (enc["input_ids"], enc["attention_mask"], ends), str(folder / "model.onnx"),
            input_names=["input_ids", "attention_mask", "span_ends"], output_names=["mention_vectors"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "span_ends": {0: "batch", 1: "spans"}, "mention_vectors": {0: "batch", 1: "spans"}},
            opset_version=opset, dynamo=False,
        )
    tok.save_pretrained(str(folder))
    shutil.copy(head_path / "config.json", folder / "head_config.json")
    inputs, outputs = graph_io(folder / "model.onnx")
    weights = [*weight_files(resolve_llm_path(cfg.llm)), head_path / "head.safetensors"]
    return ExportedModel(
        role="mentions", folder="mentions", files=["model.onnx"], source=cfg.llm,
        source_fingerprint=fingerprint_files(weights, extra=f"L{cfg.layer}:{cfg.site}"),
        exporter=f"torch.onnx.export (TorchScript) of blocks 0..{cfg.layer} + {cfg.site} capture + projection head",
        opset=opset, inputs=inputs, outputs=outputs,
        extra={"layer": cfg.layer, "site": cfg.site, "dimension": cfg.out_dim, "head": str(head_path),
               "padding_side": "right"},
    )


def export(out: str | Path, what: Sequence[Role] = ("embedder", "extractor"), *, embedder: str = "all-MiniLM-L6-v2",
           llm: str = "SmolLM2-135M-Instruct", adapter: str | Path | None = "default",
           mention_head: str | Path | None = None, opset: int = DEFAULT_OPSET, on_step: Callable[[str], None] | None = None) -> OnnxManifest:
    """Export `what` into `out`, keeping models exported earlier there; writes `latentsearch-onnx.json`."""
    out = Path(out).expanduser()
    unknown = [w for w in what if w not in ROLES]
    if unknown:
        raise ValueError(f"unknown model(s) to export: {unknown}; choose from {', '.join(ROLES)}")
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).is_file():
        _, manifest = load_manifest(out)
    else:
        manifest = OnnxManifest(created="", versions={})
    for role in what:
        if on_step:
            on_step(role)
        started = time.perf_counter()
        shutil.rmtree(out / role, ignore_errors=True)
        if role == "embedder":
            entry = export_embedder(out, embedder, opset)
        elif role == "extractor":
            entry = export_extractor(out, llm, adapter, opset)
        else:
            entry = export_mentions(out, mention_head, opset)
        entry.extra["export_seconds"] = round(time.perf_counter() - started, 1)
        manifest.models[role] = entry
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.versions = _versions()
    (out / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest
