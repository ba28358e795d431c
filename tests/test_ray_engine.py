"""`ingest --engine ray` on a real local Ray (2 CPUs): the same index as the local path (chunk ids, every
field, vectors, latent values), and crashes mid-run (a writer actor that dies, a driver that dies while
later batches are already written) followed by a re-run leave no duplicates and lose nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.cli import app
from latentsearch.config import Settings, load_settings
from latentsearch.ingest.bulk import Checkpoint
from latentsearch.ingest.pipeline import ingest
from latentsearch.ingest.ray_engine import ray_ingest

ray = pytest.importorskip("ray", reason="the Ray engine needs ray[data] (the [ray] extra; `make setup` installs it)")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (its start costs seconds); workers import `tests.*` for the factories."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def _corpus(home: Path, scifact_sample: Path, n: int, name: str = "c.jsonl") -> Path:
    path = home.parent / name
    path.write_bytes(b"\n".join(scifact_sample.read_bytes().splitlines()[:n]) + b"\n")
    return path


def _docs(home: Path, index: str) -> dict[str, dict]:
    res = EmbeddedBackend(home / "db").search(index, {"query": {"match_all": {}}, "size": 100_000})
    ids = [h["_id"] for h in res["hits"]["hits"]]
    assert len(ids) == len(set(ids)), "duplicate ids in the index"
    return {h["_id"]: h["_source"] for h in res["hits"]["hits"]}


def _assert_same_index(local: dict[str, dict], other: dict[str, dict]) -> None:
    assert sorted(other) == sorted(local)
    for cid, src in local.items():
        got = dict(other[cid])
        np.testing.assert_allclose(np.asarray(got.pop("vector")), np.asarray(src["vector"]), atol=1e-6, err_msg=cid)
        assert got == {k: v for k, v in src.items() if k != "vector"}, cid


def test_ray_engine_writes_the_same_index_as_the_local_path(home: Path, scifact_sample: Path) -> None:
    corpus = _corpus(home, scifact_sample, 30)
    settings = load_settings(index="loc", ingest={"cache": False})  # no cache: ray computes every vector itself
    local = ingest(corpus, settings, progress=False)
    report = ray_ingest(corpus, settings, index="ray", progress=False)
    assert (report.records_read, report.chunks, report.chunks_written, report.rejected) == \
        (local.records_read, local.chunks, local.chunks_written, 0)
    assert report.embeddings_computed == report.chunks > 30
    _assert_same_index(_docs(home, "loc"), _docs(home, "ray"))
    again = ray_ingest(corpus, settings, index="ray", progress=False)  # the checkpoint holds
    assert again.records_skipped_by_checkpoint == 30 and again.chunks == 0


def test_ray_engine_extracts_the_same_latent_values(home: Path, scifact_sample: Path) -> None:
    corpus = _corpus(home, scifact_sample, 4)
    settings = load_settings(index="loc", entities={"text_type": "biomedical abstract",
                                                    "latent_types": ["disease", "anatomy"]},
                             ingest={"cache": False, "latent_input": "title"})
    ingest(corpus, settings, progress=False)
    ray_ingest(corpus, settings, index="ray", progress=False)
    local, other = _docs(home, "loc"), _docs(home, "ray")
    assert sum(bool(s.get("latent")) for s in local.values()) >= 4  # extraction really ran
    _assert_same_index(local, other)


def test_cli_engine_ray_sends_bad_records_to_the_dead_letter_once(home: Path, scifact_sample: Path) -> None:
    good = scifact_sample.read_bytes().splitlines()[:3]
    corpus = home.parent / "bad.jsonl"
    corpus.write_bytes(b"\n".join([good[0], b'{"_id": "broken", "text": "unterminated', good[1], good[0],
                                   good[2]]) + b"\n")
    dead = home.parent / "dead.jsonl"
    res = CliRunner().invoke(app, ["ingest", "bad.jsonl", "--index", "bad", "--engine", "ray", "--json",
                                   "--dead-letter", str(dead)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    rows = [json.loads(x) for x in dead.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 4] and report["rejected"] == 2 and report["records_read"] == 3
    assert "duplicate" in rows[1]["reason"] and rows[0]["source_path"] == "bad.jsonl"  # named as given
    assert {s["source"]["path"] for s in _docs(home, "bad").values()} == {"bad.jsonl"}


def test_cli_refuses_unknown_engines_and_ray_flags_without_ray(home: Path, scifact_sample: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", str(scifact_sample), "--engine", "spark"])
    assert res.exit_code == 1 and "use local or ray" in res.output
    res = CliRunner().invoke(app, ["ingest", str(scifact_sample), "--ray-address", "auto"])
    assert res.exit_code == 1 and "--engine ray only" in res.output


class CrashingBackend(EmbeddedBackend):
    """The real embedded engine behind a writer that dies on its n-th bulk request (inside the actor)."""

    def __init__(self, path: Path, crash_on: int):
        super().__init__(path)
        self.calls, self.crash_on = 0, crash_on

    def bulk(self, index, actions, *, refresh=False):
        self.calls += 1
        if self.calls == self.crash_on:
            raise RuntimeError("simulated writer crash")
        return super().bulk(index, actions, refresh=refresh)


def crashing_backend(settings: Settings) -> EmbeddedBackend:
    """A backend factory (workers import it from this module): the 6th bulk request fails, mid second batch."""
    return CrashingBackend(settings.backend.resolved_embedded_path, crash_on=6)


def _expected(home: Path, corpus: Path, settings: Settings) -> dict[str, dict]:
    ingest(corpus, settings.model_copy(update={"index": "ref"}), progress=False)
    return _docs(home, "ref")


def test_a_writer_crash_then_rerun_gives_no_duplicates_and_no_losses(home: Path, scifact_sample: Path) -> None:
    corpus = _corpus(home, scifact_sample, 100)  # ~190 chunks: 3 batches of >= 64, bulk requests of 16
    settings = load_settings(index="crash", ingest={"embed_batch_size": 16, "write_batch_size": 16})
    with pytest.raises(Exception, match="simulated writer crash"):
        ray_ingest(corpus, settings, progress=False, backend_factory=crashing_backend)
    partial = _docs(home, "crash")
    assert 0 < len(partial)
    # the checkpoint never claims more than was written: every record up to its line is whole in the index
    target = f"embedded:{settings.backend.resolved_embedded_path}"
    settled = Checkpoint.load(settings.home, corpus, "crash", target).line
    expected = _expected(home, corpus, settings)
    lines = {json.loads(x)["_id"]: i for i, x in enumerate(corpus.read_bytes().splitlines(), start=1)}
    assert {c for c in expected if lines[c.split("#")[0]] <= settled} <= set(partial)
    report = ray_ingest(corpus, settings, progress=False)
    assert report.resumed_from_item == settled and report.rejected == 0
    assert report.records_read + report.records_skipped_by_checkpoint == 100
    _assert_same_index(expected, _docs(home, "crash"))


def test_a_driver_crash_with_later_batches_written_then_rerun(home: Path, scifact_sample: Path) -> None:
    """The driver dies after settling its first batch; the re-run rewrites whatever Ray had already written."""
    corpus = _corpus(home, scifact_sample, 100)
    settings = load_settings(index="drv", ingest={"embed_batch_size": 16})
    settled: list[int] = []

    def die(line: int) -> None:
        settled.append(line)
        raise KeyboardInterrupt("simulated driver crash")

    with pytest.raises(KeyboardInterrupt):
        ray_ingest(corpus, settings, progress=False, on_progress=die)
    assert len(settled) == 1 and 0 < settled[0] < 100
    report = ray_ingest(corpus, settings, progress=False)
    assert report.resumed_from_item == settled[0] and report.records_read == 100 - settled[0]
    _assert_same_index(_expected(home, corpus, settings), _docs(home, "drv"))


@pytest.mark.slow
def test_ray_engine_on_200_abstracts_with_latent_entities(home: Path, scifact_sample: Path) -> None:
    """The issue's check: 200 SciFact abstracts, latent `disease` and `anatomy` from titles, local vs ray
    (`-s` prints both runs' figures)."""
    corpus = _corpus(home, scifact_sample, 200)
    settings = load_settings(index="loc", entities={"text_type": "biomedical abstract",
                                                    "latent_types": ["disease", "anatomy"]},
                             ingest={"cache": False, "latent_input": "title"})
    local = ingest(corpus, settings, progress=False)
    report = ray_ingest(corpus, settings, index="ray", progress=False)
    print(f"\n200 abstracts, {local.chunks} chunks, 2 latent types from titles: local {local.seconds:.1f} s, "
          f"ray (local, num_cpus=2: 1 enrichment actor) {report.seconds:.1f} s")
    docs = _docs(home, "loc")
    assert len(docs) == local.chunks == report.chunks and sum(bool(s.get("latent")) for s in docs.values()) > 100
    _assert_same_index(docs, _docs(home, "ray"))
