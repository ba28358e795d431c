"""The CLI as a user runs it: ingest, search (--json is a stable contract), info, delete-index,
mappings, demo, help texts and error messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsearch.cli import app
from latentsearch.samples import SAMPLE_CORPUS

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def small_corpus(home: Path) -> Path:
    path = home.parent / "corpus.jsonl"
    path.write_bytes(b"\n".join(SAMPLE_CORPUS.read_bytes().splitlines()[:12]) + b"\n")
    return path


def test_ingest_search_info_delete(home: Path, small_corpus: Path) -> None:
    code, out, err = _invoke("ingest", str(small_corpus), "--index", "cli", "--json", "--latent-types", "disease,chemical",
                             "--text-type", "biomedical abstract", "--no-latent")
    assert code == 0, err
    report = json.loads(out)
    assert report["records_read"] == 12 and report["rejected"] == 0 and report["backend"] == "embedded"

    first = json.loads(small_corpus.read_text().splitlines()[0])
    code, out, err = _invoke("search", first["title"], "--index", "cli", "--k", "3", "--json", "--show-dsl")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"query", "index", "mode", "total", "took_ms", "hits", "dsl"}
    assert set(result["hits"][0]) >= {"id", "doc_id", "chunk", "score", "title", "text", "latent", "metadata"}
    assert result["hits"][0]["doc_id"] == first["_id"]
    assert len({h["doc_id"] for h in result["hits"]}) == len(result["hits"]) == 3  # collapsed to documents
    assert "knn" in result["dsl"]["query"] and result["dsl"]["collapse"] == {"field": "doc_id"}

    for mode in ("bm25", "hybrid"):
        code, out, err = _invoke("search", first["title"], "--index", "cli", "--mode", mode, "--json")
        assert code == 0, err
        assert json.loads(out)["hits"][0]["doc_id"] == first["_id"]

    code, out, _ = _invoke("info", "--json")
    info = json.loads(out)
    [idx] = [i for i in info["indices"] if i["name"] == "cli"]
    assert idx["dimension"] == 384 and [t["name"] for t in idx["entities"]["latent_types"]] == ["disease", "chemical"]
    assert idx["chunks"] == report["chunks_written"]

    code, out, _ = _invoke("delete-index", "cli", "--yes")
    assert code == 0 and "deleted" in out
    code, _, err = _invoke("search", "anything", "--index", "cli")
    assert code == 1 and "does not exist" in err and "latentsearch ingest" in err


def test_human_output_and_dead_letter_message(home: Path, small_corpus: Path) -> None:
    with small_corpus.open("ab") as fh:
        fh.write(b'{"_id": "x", "text": \n')
    code, out, err = _invoke("ingest", str(small_corpus), "--index", "human", "--no-progress")
    assert code == 0, err
    assert "ingest summary" in out and "rejected" in err and "deadletter" in err
    code, out, _ = _invoke("search", "cancer", "--index", "human", "--k", "2")
    assert code == 0 and "matching chunks" in out


def test_errors_are_clear(home: Path, tmp_path: Path) -> None:
    code, _, err = _invoke("search", "x", "--backend", "opensearch")
    assert code == 1 and "needs a URL" in err
    code, _, err = _invoke("search", "x", "--mode", "fuzzy")
    assert code == 1 and "--mode" in err
    bad = tmp_path / "data.xml"
    bad.write_text("<x/>")
    code, _, err = _invoke("ingest", str(bad))
    assert code == 1 and "supported formats" in err


def test_mappings_command_matches_shipped_json(home: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "mappings" / "generated"
    for backend in ("opensearch", "elasticsearch"):
        code, out, err = _invoke("mappings", "--backend", backend)
        assert code == 0, err
        assert json.loads(out) == json.loads((shipped / f"{backend}-index.json").read_text()), (
            f"mappings/generated/{backend}-index.json is stale: regenerate with "
            f"`latentsearch mappings --backend {backend} --out mappings/generated/{backend}-index.json`"
        )


def test_config_file_and_env_precedence(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "latentsearch.toml"
    cfg.write_text('index = "from-file"\n[entities]\ntext_type = "news post"\nlatent_types = ["topic"]\n')
    code, out, _ = _invoke("info", "--json", "--config", str(cfg))
    assert json.loads(out)["default_index"] == "from-file"
    monkeypatch.setenv("LATENTSEARCH_INDEX", "from-env")
    code, out, _ = _invoke("info", "--json", "--config", str(cfg))
    assert json.loads(out)["default_index"] == "from-env"
    code, out, _ = _invoke("info", "--json", "--config", str(cfg), "--index", "from-flag")
    assert json.loads(out)["default_index"] == "from-flag"


def test_demo_runs_end_to_end(home: Path) -> None:
    code, out, err = _invoke("demo", "--corpus", str(SAMPLE_CORPUS), "--limit", "15", "--queries", "1", "--k", "3",
                            "--no-latent")  # the latent run is tests/test_demo.py (slow)
    assert code == 0, err
    assert "1/2 ingest" in out and "2/2 search" in out and "claim" in out


def test_help_teaches() -> None:
    exe = shutil.which("latentsearch", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("ingest", "search", "info", "delete-index", "demo", "mappings"):
        assert cmd in out
    out = subprocess.run([exe, "ingest", "--help"], capture_output=True, text=True, check=True).stdout
    assert "dead-letter" in out and "--latent-types" in out
