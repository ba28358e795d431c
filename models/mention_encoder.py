"""Per-mention vectors from a mid layer of a causal LLM (NER Retriever, §3-4).

One forward pass per text gives a vector for every mention in it: the output of block L's value
projection (`self_attn.v_proj`) at the mention's last token. Nothing after what we read is computed:
a forward hook on the captured module raises, so blocks L+1.. and the LM head never run. Layer
count, head sizes and dimensions are read from the model config, so any Llama/Mistral/Qwen-style
model folder works (the NER Retriever paper uses layer 17 of Llama-3.1-8B; for SmolLM2-135M the
layer comes from our sweep, see models/artifacts/mention-head-smollm2/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from latentsearch.models.llm import SMOLLM2, load_llm
from latentsearch.models.registry import cached
from latentsearch.models.spans import Span

Site = Literal["v_proj", "k_proj", "block"]
SITES: tuple[Site, ...] = ("k_proj", "v_proj", "block")


class _StopForward(Exception):
    """Raised by the capture hook: everything the caller needs has been computed."""


def decoder_layers(model: Any) -> Any:
    """The list of transformer blocks of a Llama/Mistral/Qwen-style causal LM."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `model.layers`: only Llama/Mistral/Qwen-style decoders "
                         "are supported")
    return layers


def site_module(model: Any, layer: int, site: Site) -> Any:
    block = decoder_layers(model)[layer]
    return block if site == "block" else getattr(block.self_attn, site)


def site_dimension(config: Any, site: Site) -> int:
    """Output width of a capture site, from the config (k/v: kv heads × head dim; block: hidden size)."""
    if site == "block":
        return int(config.hidden_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return int(kv_heads * head_dim)


def last_token_positions(offsets: Sequence[Sequence[int]], spans: Sequence[Span]) -> list[int]:
    """For each span, the index of the last token that starts before the span's end (the token
    holding its last character). Special tokens have empty (0, 0) offsets and are skipped."""
    starts = np.array([s if e > s else -1 for s, e in offsets])
    out = []
    for span in spans:
        idx = np.flatnonzero((starts >= 0) & (starts < span.end))
        if idx.size == 0:
            raise ValueError(f"span {span.text!r} ({span.start}:{span.end}) lies outside the tokenized text "
                             "(truncated? raise max_length)")
        out.append(int(idx[-1]))
    return out


class MentionEncoder:
    """Texts + spans -> one raw vector per span, read at (layer, site) of the LLM."""

    def __init__(self, llm: str = SMOLLM2, layer: int | None = None, site: Site = "v_proj", device: str = "cpu",
                 batch_size: int = 16, max_length: int = 2048):
        self.lm = load_llm(llm, device)
        self.llm_name = llm
        config = self.lm.model.config
        self.num_layers = int(config.num_hidden_layers)
        self.layer = self.num_layers // 2 if layer is None else layer
        if not 0 <= self.layer < self.num_layers:
            raise ValueError(f"layer {self.layer} out of range: {llm} has blocks 0..{self.num_layers - 1}")
        if site not in SITES:
            raise ValueError(f"site must be one of {SITES}, got {site!r}")
        self.site: Site = site
        self.dimension = site_dimension(config, site)
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def fingerprint(self) -> str:
        return f"{self.llm_name}:L{self.layer}:{self.site}"

    def encode(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> list[np.ndarray]:
        """One float32 array (n_spans, dimension) per text; texts without spans cost nothing."""
        import torch

        out: list[np.ndarray] = [np.zeros((len(s), self.dimension), dtype=np.float32) for s in spans]
        todo = sorted((i for i, s in enumerate(spans) if s), key=lambda i: len(texts[i]))
        module = site_module(self.lm.model, self.layer, self.site)
        captured: dict[str, Any] = {}

        def hook(_mod, _inp, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            for b in range(0, len(todo), self.batch_size):
                idx = todo[b : b + self.batch_size]
                enc = self.lm.tokenizer([texts[i] for i in idx], return_offsets_mapping=True, padding=True,
                                        truncation=True, max_length=self.max_length, return_tensors="pt",
                                        padding_side="right")
                offsets = enc.pop("offset_mapping").tolist()
                enc = {k: v.to(self.lm.device) for k, v in enc.items()}
                captured.clear()
                with torch.inference_mode():
                    try:
                        self.lm.model.model(**enc, use_cache=False)
                    except _StopForward:
                        pass
                hidden = captured["h"].float().cpu().numpy()
                for row, i in enumerate(idx):
                    pos = last_token_positions(offsets[row], spans[i])
                    out[i] = hidden[row, pos].astype(np.float32)
        finally:
            handle.remove()
        return out


def get_mention_encoder(llm: str = SMOLLM2, layer: int | None = None, site: Site = "v_proj",
                        device: str = "cpu") -> MentionEncoder:
    """The process-wide encoder for (llm, layer, site, device)."""
    return cached(("mention-encoder", llm, str(layer), site, device), lambda: MentionEncoder(llm, layer, site, device))
