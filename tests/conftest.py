"""Shared fixtures: an isolated LATENTSEARCH_HOME per test and one embedder per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # small real slices, see tests/data/README.md

# the session's real OpenSearch node (fixture `opensearch_node`, marker `opensearch_node`)
pytest_plugins = ["tests.opensearch_node"]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LATENTSEARCH_HOME (embedded db, caches, checkpoints, dead letters) for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("LATENTSEARCH_HOME", str(path))
    monkeypatch.delenv("LATENTSEARCH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture(scope="session")
def embedder():
    from latentsearch.models.factory import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def scifact_sample() -> Path:
    from latentsearch.samples import SAMPLE_CORPUS

    return SAMPLE_CORPUS
