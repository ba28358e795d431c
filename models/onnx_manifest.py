"""The manifest an ONNX export folder carries: what each graph is, where it came from, how to call it.

Kept free of torch/onnxruntime imports so that `models.embedder = "/path/to/export"` can be recognised
cheaply by the model getters before anything heavy is loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "latentsearch-onnx.json"
Role = Literal["embedder", "extractor", "mentions"]
ROLES: tuple[Role, ...] = ("embedder", "extractor", "mentions")


class TensorSpec(BaseModel):
    """One graph input or output: name, element type, shape (ints, or names of dynamic axes)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: str
    shape: list[int | str]


class ExportedModel(BaseModel):
    """One exported model: its folder (relative to the manifest), graph file and provenance."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    folder: str = Field(description="Sub-folder of the export holding the graph and the tokenizer")
    files: list[str] = Field(description="Graph files (the first is the one to open)")
    source: str = Field(description="The model name or folder it was exported from")
    adapter: str | None = Field(None, description="LoRA adapter merged in before export, if any")
    source_fingerprint: str = Field(description="sha256 over the source weights (and adapter): detects stale exports")
    exporter: str = Field(description="Which exporter produced it and how")
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    extra: dict[str, Any] = Field(default_factory=dict, description="Role-specific facts (dimension, pooling, ...)")


class OnnxManifest(BaseModel):
    """`latentsearch-onnx.json`: the table of contents of an export folder."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    created: str
    versions: dict[str, str] = Field(description="latentsearch, torch, transformers, onnx, onnxruntime at export")
    models: dict[str, ExportedModel] = Field(default_factory=dict)

    def model(self, role: Role) -> ExportedModel:
        if role not in self.models:
            have = ", ".join(sorted(self.models)) or "nothing"
            raise KeyError(f"this ONNX export holds no {role} (it has {have}): re-run "
                           f"`latentsearch export-onnx --what {role}`")
        return self.models[role]


def find_export_root(path: str | Path) -> Path | None:
    """The export folder for `path` (the folder itself or one of its role sub-folders), else None."""
    p = Path(path).expanduser()
    if (p / MANIFEST_NAME).is_file():
        return p
    # a role sub-folder (`export/embedder`); never the parent of a bare model name like "all-MiniLM-L6-v2"
    if p.name in ROLES and p.is_dir() and (p.parent / MANIFEST_NAME).is_file():
        return p.parent
    return None


def is_onnx_export(path: str | Path) -> bool:
    """True when `path` is an export folder written by `latentsearch export-onnx` (or a role sub-folder of one)."""
    try:
        return find_export_root(path) is not None
    except (OSError, ValueError):
        return False


def load_manifest(path: str | Path) -> tuple[Path, OnnxManifest]:
    """(export root, manifest) for an export folder or one of its sub-folders."""
    root = find_export_root(path)
    if root is None:
        raise FileNotFoundError(f"{path} is not an ONNX export (no {MANIFEST_NAME}): run `latentsearch export-onnx`")
    return root, OnnxManifest.model_validate_json((root / MANIFEST_NAME).read_text(encoding="utf-8"))


def fingerprint_files(paths: list[Path], extra: str = "") -> str:
    """sha256 (first 16 hex) over the bytes of `paths` in order, plus `extra`."""
    h = hashlib.sha256(extra.encode())
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a Hugging Face / sentence-transformers folder, sorted (for fingerprints)."""
    folder = Path(folder)
    files = sorted(p for pattern in ("*.safetensors", "*.bin", "*.gguf") for p in folder.glob(pattern))
    return files
