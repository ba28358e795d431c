"""The wheel builds without setuptools warnings and ships the data the code reads at run time.

Each data folder (sample corpus, generated mappings, model artifacts, lab data) is a listed data-only
package: setuptools warns ("Package would be ignored") about every folder under a package that ships
files without being listed, and `make setup` used to print a wall of them. The build runs on a copy of
the working tree (setuptools writes build/ next to the sources) without build isolation, so it needs no
network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".ruff_cache",
                                     ".pytest_cache")

#: files the package opens at run time (samples, mappings, the shipped adapter and head, lab data, the playground)
SHIPPED = [
    "latentsearch/data/scifact-sample.jsonl",
    "latentsearch/data/scifact-sample-queries.jsonl",
    "latentsearch/mappings/generated/opensearch-index.json",
    "latentsearch/mappings/generated/elasticsearch-index.json",
    "latentsearch/models/artifacts/lentex-smollm2-lora/adapter_model.safetensors",
    "latentsearch/models/artifacts/lentex-smollm2-lora/adapter_config.json",
    "latentsearch/models/artifacts/lentex-smollm2-lora-textfirst/adapter_model.safetensors",
    "latentsearch/models/artifacts/lentex-smollm2-lora-textfirst/lentex.json",
    "latentsearch/models/artifacts/mention-head-smollm2/head.safetensors",
    "latentsearch/models/artifacts/mention-head-smollm2/config.json",
    "latentsearch/onnx_export/serve/playground.html",
    "latentsearch/ingest/pipeline.py",
    "latentsearch/query/retrieval.py",
]


def test_wheel_builds_clean_and_ships_the_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCES)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w",
                          str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "would be ignored" not in log and "absent from the `packages`" not in log, log[-3000:]
    assert "deprecated" not in log.lower(), log[-3000:]  # e.g. `project.license` as a TOML table
    (wheel,) = (tmp_path / "wheel").glob("latentsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [p for p in SHIPPED if p not in names] == []
    lab = [n for n in names if n.startswith("latentsearch/lab/data/")]
    assert {n.split("/")[3] for n in lab} == {"lentex", "linking", "typed_mentions"}
    assert any(n.startswith("latentsearch/lab/data/lentex/parts/") for n in lab)
    assert not any(n.startswith("tests/") for n in names)  # tests and their vendored data stay in the repository
