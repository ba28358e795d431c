"""`--json` output is pure JSON on every command: stdout parses as one JSON document (progress bars, notices
and logs go to stderr). The command list is read from the CLI itself, so a new command with `--json` fails
`test_every_json_command_is_covered` until it gets an invocation here.

Each command runs as a real subprocess (`python -m latentsearch.cli`) on a private embedded db built from
bundled SciFact abstracts. Commands that need no LLM run in the default suite; those that load SmolLM2 or
train are `slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INDEX = "json-out"
DATA = REPO / "tests" / "data"


def json_commands() -> list[str]:
    """Every CLI command that has a `--json` option, as 'group command'."""
    import typer.main

    from latentsearch.cli import app

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        elif any("--json" in getattr(p, "opts", ()) for p in cmd.params):
            yield " ".join(path)

    return sorted(walk(typer.main.get_command(app), []))


def _sample(tmp: Path, n: int) -> Path:
    from latentsearch.samples import SAMPLE_CORPUS

    path = tmp / f"corpus-{n}.jsonl"
    path.write_text("\n".join(SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[:n]) + "\n", encoding="utf-8")
    return path


def _queries(tmp: Path) -> tuple[Path, Path]:
    """Two sample claims and their qrels, judged against the first abstracts ingested."""
    from latentsearch.samples import SAMPLE_CORPUS

    docs = [json.loads(line)["_id"] for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[:2]]
    queries, qrels = tmp / "queries.jsonl", tmp / "qrels.tsv"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": t, "relevant": [d]}) + "\n" for i, (t, d) in
                               enumerate(zip(["white matter diffusion in newborns", "nanotechnology and cells"],
                                             docs))))
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d}\t1\n" for i, d in enumerate(docs)))
    return queries, qrels


#: command -> (arguments after the command, slow?). {corpus}, {queries}, {qrels}, {tmp} are filled in.
INVOCATIONS: dict[str, tuple[list[str], bool]] = {
    "ingest": (["{corpus}", "--index", INDEX, "--no-latent", "--no-progress"], False),
    "info": (["--index", INDEX], False),
    "doctor": (["--index", INDEX], False),
    "search": (["white matter of newborns", "--index", INDEX, "--k", "3", "--filter", "doc_id=4983"], False),
    "eval retrieval": (["--queries", "{queries}", "--qrels", "{qrels}", "--index", INDEX, "--variants", "dense,bm25"],
                       False),
    "opensearch-setup": (["--dry-run", "--url", "http://127.0.0.1:9"], False),
    "vocab show": (["--index", "json-vocab"], False),
    "ask": (["What changes in newborn white matter?", "--index", INDEX, "--k", "2", "--max-tokens", "16"], True),
    "entities": (["disease", "--index", INDEX, "--k", "2"], True),
    "eval entity-retrieval": (["--conll", str(DATA / "wnut17" / "emerging.dev.head200.conll"), "--limit", "5"], True),
    "eval rag": (["--queries", "{queries}", "--qrels", "{qrels}", "--index", INDEX, "--limit", "1",
                  "--max-tokens", "16"], True),
    "link": (["You should have stayed on Redondo Beach Blvd in Gardena with Ahmed.", "--kb",
              str(REPO / "latentsearch" / "lab" / "data" / "linking" / "kb.jsonl")], True),
}
#: Commands whose cheapest run still trains or exports a model (minutes on 2 cores): covered by their own
#: tests (test_onnx.py, test_mentions.py, test_lentex.py, test_linking.py) but not yet here.
NOT_YET = {
    "export-onnx": "exports ONNX models (minutes)",
    "train mention-head": "trains the mention head (minutes)",
    "eval extraction": "runs three extraction methods over the LentEx test split",
    "eval clustering": "needs a labelled 20-newsgroups JSONL and an LLM pass per text",
    "eval layer-sweep": "sweeps LLM layers over WNUT-17",
    "eval linking": "links the bundled linking set with the LLM",
    "tune strictness": "needs an index with LLM-extracted latent values; tests/test_rewriter.py::"
                       "test_tune_strictness_stores_a_policy_that_auto_uses parses its --json stdout",
}


def test_every_json_command_is_covered() -> None:
    found = set(json_commands())
    assert found == set(INVOCATIONS) | set(NOT_YET), (
        f"new --json commands need an invocation here: {sorted(found - set(INVOCATIONS) - set(NOT_YET))}; "
        f"gone: {sorted((set(INVOCATIONS) | set(NOT_YET)) - found)}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("json-out")
    queries, qrels = _queries(tmp)
    return {"corpus": str(_sample(tmp, 6)), "queries": str(queries), "qrels": str(qrels), "tmp": str(tmp),
            "db": str(tmp / "db")}


def _run(command: str, workspace: dict[str, str]) -> subprocess.CompletedProcess:
    args, _ = INVOCATIONS[command]
    env = {**os.environ, "LATENTSEARCH_BACKEND__EMBEDDED_PATH": workspace["db"], "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "80"}
    argv = [sys.executable, "-m", "latentsearch.cli", *command.split(), *[a.format(**workspace) for a in args],
            "--json"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=workspace["tmp"])


def _vocabulary(workspace: dict[str, str]) -> None:
    """An index with latent values written directly (no LLM) and its vocabulary, for `vocab show`."""
    from latentsearch.backends import BulkAction
    from latentsearch.backends.embedded import EmbeddedBackend
    from latentsearch.config import EntitySchema
    from latentsearch.ingest.vocabulary import update_index_vocabulary
    from latentsearch.mappings import opensearch_index_body
    from latentsearch.models.factory import get_embedder

    backend = EmbeddedBackend(workspace["db"])
    if backend.index_exists("json-vocab"):
        return
    backend.create_index("json-vocab", opensearch_index_body(EntitySchema(latent_types=["anatomy"]), dimension=4))
    docs = [["T-cells"], ["t cell", "brain"], ["liver"]]
    backend.bulk("json-vocab", [BulkAction(id=str(i), source={"doc_id": str(i), "text": "x", "latent": {"anatomy": v}})
                                for i, v in enumerate(docs)], refresh=True)
    update_index_vocabulary(backend, "json-vocab", get_embedder())


def _ingested(workspace: dict[str, str]) -> None:
    if not (Path(workspace["db"]) / f"{INDEX}.lance").exists():
        done = _run("ingest", workspace)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [pytest.param(c, marks=[pytest.mark.slow] if slow else [])
                                     for c, (_, slow) in INVOCATIONS.items()])
def test_json_stdout_is_one_json_document(command: str, workspace: dict[str, str]) -> None:
    if command.startswith("vocab"):
        _vocabulary(workspace)
    elif command != "ingest":
        _ingested(workspace)
    done = _run(command, workspace)
    ok = (0, 1) if command == "doctor" else (0,)  # doctor exits 1 when it reports a problem, still as JSON
    assert done.returncode in ok, f"{command} failed:\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError as err:
        pytest.fail(f"`{command} --json` stdout is not one JSON document ({err}):\n{done.stdout[:1500]}")
    assert parsed not in (None, {}, [])
