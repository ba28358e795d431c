"""onnxruntime versions of the embedder and the extractor, drop-in for the PyTorch ones.

Selected by configuration: point `models.embedder` and/or `models.extractor_adapter` (the exported
extractor is the LLM with its adapter merged) at a folder written by `latentsearch export-onnx`, and
`get_embedder` / `get_extractor` return these classes instead; `models.llm` stays the PyTorch model
that chat, RAG and the mention encoder use.
`models.device = "cuda"` uses CUDAExecutionProvider when `onnxruntime-gpu` sees a GPU, else CPU
(with a warning), so one config works on both kinds of machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.models.extractor import LatentEntityExtractor, adapter_prompt_format
from latentsearch.models.llm import LoadedLM
from latentsearch.models.onnx_manifest import ExportedModel, Role, load_manifest

log = logging.getLogger(__name__)


def providers(device: str = "cpu") -> list[str]:
    """Execution providers for `device`: CUDA first when asked for and available, CPU always last."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("device=%s but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a GPU "
                    "machine): running on CPU", device)
    return ["CPUExecutionProvider"]


def resolve(path: str | Path, role: Role) -> tuple[Path, ExportedModel]:
    """(folder holding the graph, manifest entry) of `role` in the export at or above `path`."""
    root, manifest = load_manifest(path)
    entry = manifest.model(role)
    return root / entry.folder, entry


class OnnxEmbedder:
    """Same interface as `latentsearch.models.embedder.Embedder`, backed by one onnxruntime session.

    `name` is the *source* model's name: the vectors are that model's (parity-tested), so an index
    built with the PyTorch embedder accepts them and the content cache stays valid."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import onnxruntime as ort

        self.folder, self.entry = resolve(path, "embedder")
        self.name = self.entry.source
        self.device = device
        self.path = str(self.folder)
        self.providers = providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.folder / self.entry.files[0]), options, providers=self.providers)
        self._inputs = [i.name for i in self.session.get_inputs()]

    @property
    def dimension(self) -> int:
        return int(self.entry.extra["dimension"])

    @property
    def max_tokens(self) -> int:
        return int(self.entry.extra["max_tokens"])

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.folder))

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [str(t).strip() for t in texts]  # as sentence-transformers tokenizes
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="np")
            feed = {name: enc[name].astype(np.int64) for name in self._inputs}
            out[idx] = self.session.run(["sentence_embedding"], feed)[0]
        return out


class OnnxExtractor(LatentEntityExtractor):
    """`LatentEntityExtractor` whose LLM is the exported graph (LoRA merged, KV cache) under optimum's
    `ORTModelForCausalLM`: prompts, greedy generation, normalisation and option scoring are inherited."""

    def __init__(self, path: str | Path, device: str = "cpu", max_new_tokens: int = 12, max_input_tokens: int = 384,
                 max_values: int = 3, batch_size: int = 16):
        self.folder, self.entry = resolve(path, "extractor")
        self.model_name = self.entry.source
        self.adapter = Path(self.entry.adapter) if self.entry.adapter else None
        if self.adapter is not None and self.adapter.is_dir():
            self.prompt_format = adapter_prompt_format(self.adapter)
        self.providers = providers(device)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_values = max_values
        self.batch_size = batch_size
        self.lm = self._load()

    def _load(self) -> LoadedLM:
        from optimum.onnxruntime import ORTModelForCausalLM
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = ORTModelForCausalLM.from_pretrained(str(self.folder), provider=self.providers[0], use_cache=True)
        return LoadedLM(name=f"onnx:{self.model_name}", model=model, tokenizer=tokenizer, device=self.device)

    @property
    def fingerprint(self) -> str:
        """The source's fingerprint marked as ONNX: same model, separate cache entries (fp differences)."""
        return (f"lentex:onnx:{self.entry.source_fingerprint}:{self.max_new_tokens}:{self.max_input_tokens}:"
                f"{self.max_values}")


class OnnxMentionVectorizer:
    """`MentionVectorizer.encode_spans` (with its projection head) from the exported mention graph: one
    session call per batch of texts gives the normalised vectors of all their spans."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 16, max_length: int = 2048):
        import onnxruntime as ort

        self.folder, self.entry = resolve(path, "mentions")
        self.dimension = int(self.entry.extra["dimension"])
        self.batch_size = batch_size
        self.max_length = max_length
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.folder / self.entry.files[0]), options,
                                            providers=providers(device))

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.folder))

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """One float32 array (n_spans, dimension) per text; spans are `models.spans.Span`s."""
        from latentsearch.models.mention_encoder import last_token_positions

        out = [np.zeros((len(s), self.dimension), dtype=np.float32) for s in spans]
        todo = sorted((i for i, s in enumerate(spans) if s), key=lambda i: len(texts[i]))
        for b in range(0, len(todo), self.batch_size):
            idx = todo[b : b + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_offsets_mapping=True, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np", padding_side="right")
            ends = [last_token_positions(enc["offset_mapping"][row].tolist(), spans[i]) for row, i in enumerate(idx)]
            width = max(len(e) for e in ends)
            span_ends = np.array([e + [0] * (width - len(e)) for e in ends], dtype=np.int64)
            vectors = self.session.run(["mention_vectors"], {
                "input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64),
                "span_ends": span_ends,
            })[0]
            for row, i in enumerate(idx):
                out[i] = vectors[row, : len(ends[row])].astype(np.float32)
        return out
