"""Remote extraction (`models.extractor_url`) against a real `latentsearch serve` on loopback.

Oracle: the local extractor (SmolLM2 + the shipped LoRA adapter, merged, greedy) on the same texts. The server
answers chat requests naming the extractor model (`SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst`) with that
same adapter-merged LM, so remote and local must give the same values. The endpoint is killed mid-ingest
(uvicorn shut down, connections refused) to check that nothing is lost: the ingest fails before writing
the batch, and a re-run against the restarted endpoint resumes and lands every chunk exactly once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from latentsearch.config import ModelsConfig, load_settings  # noqa: E402
from latentsearch.onnx_export.serve import ServeConfig, create_app  # noqa: E402

KEY = "remote-key-17"
TYPE = "disease"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving a fresh app on 127.0.0.1:`port` in a background thread (restartable on the same port)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = ServeConfig(api_key=KEY, max_tokens_limit=64, preload=[], settings=load_settings())
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                                    log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __exit__(self, *exc) -> None:
        self.stop()


def _abstracts(sample: Path, n: int, skip: int = 0) -> list[dict]:
    lines = sample.read_text(encoding="utf-8").splitlines()[skip: skip + n]
    return [json.loads(line) for line in lines]


def _remote(url: str, concurrency: int = 4):
    from latentsearch.models.factory import extractor_from_settings

    return extractor_from_settings(ModelsConfig(extractor_url=url + "/v1", extractor_api_key=KEY,
                                                extractor_concurrency=concurrency))


@pytest.mark.parametrize("n", [8, pytest.param(50, marks=pytest.mark.slow)])
def test_remote_gives_the_local_values(home: Path, scifact_sample: Path, n: int) -> None:
    from latentsearch.models.factory import get_extractor
    from latentsearch.models.remote_extractor import RemoteExtractor

    texts = [f"{d['title']}. {d['text']}" for d in _abstracts(scifact_sample, n)]
    local = get_extractor().extract(texts, "biomedical abstract", TYPE)
    with LiveServer(_free_port()) as live:
        remote = _remote(live.url)
        assert isinstance(remote, RemoteExtractor)
        assert remote.model_name == "SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst"  # the adapter, not the base LLM
        got = remote.extract(texts, "biomedical abstract", TYPE)
    assert got == local
    assert sum(1 for v in local if v) >= n // 2  # real answers, not all empty


def test_options_type_answers_one_of_the_options(home: Path, scifact_sample: Path) -> None:
    options = ["cancer", "diabetes", "infection", "heart disease"]
    texts = [d["text"] for d in _abstracts(scifact_sample, 3)]
    with LiveServer(_free_port()) as live:
        got = _remote(live.url).extract(texts, "biomedical abstract", TYPE, options=options)
    assert len(got) == 3 and all(len(v) == 1 and v[0] in options for v in got)


def test_wrong_api_key_is_a_clear_error(home: Path) -> None:
    from latentsearch.models.remote_extractor import RemoteExtractionError, RemoteExtractor

    with LiveServer(_free_port()) as live:
        ex = RemoteExtractor(live.url + "/v1", "SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst", api_key="wrong")
        with pytest.raises(RemoteExtractionError, match="401"):
            ex.extract(["Aspirin lowers fever."], "biomedical abstract", TYPE)


def test_an_endpoint_that_comes_back_is_retried(home: Path) -> None:
    from latentsearch.models.remote_extractor import RemoteExtractor

    port = _free_port()
    ex = RemoteExtractor(f"http://127.0.0.1:{port}/v1", "SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst", api_key=KEY,
                         backoff_initial_s=1.0, max_retries=8)
    live = LiveServer(port)
    starter = threading.Timer(1.5, live.__enter__)  # nothing listens at first: connection refused, retried
    starter.start()
    try:
        got = ex.extract(["Insulin resistance and high blood glucose in adults."], "biomedical abstract", TYPE)
    finally:
        starter.join()
        live.stop()
    assert ex.stats.retries >= 1 and ex.stats.requests == 1
    assert isinstance(got[0], list)


def test_killed_endpoint_mid_ingest_loses_nothing(home: Path, scifact_sample: Path, tmp_path: Path) -> None:
    from latentsearch.backends import open_backend
    from latentsearch.ingest.pipeline import ingest
    from latentsearch.models.factory import extractor_from_settings, get_extractor
    from latentsearch.models.remote_extractor import RemoteExtractionError

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in _abstracts(scifact_sample, 6, skip=100)) + "\n")
    port = _free_port()
    settings = load_settings(
        index="remote", entities={"text_type": "biomedical abstract", "latent_types": [TYPE]},
        models={"extractor_url": f"http://127.0.0.1:{port}/v1", "extractor_api_key": KEY,
                "extractor_concurrency": 1},
    )
    remote = extractor_from_settings(settings.models)  # the instance ingest uses (one per process)
    remote.max_retries, remote.backoff_initial_s = 2, 0.2  # give up quickly once the endpoint is gone

    live = LiveServer(port).__enter__()

    def kill_after_two_answers() -> None:
        while remote.stats.requests < 2:
            time.sleep(0.05)
        live.stop()

    killer = threading.Thread(target=kill_after_two_answers, daemon=True)
    killer.start()
    with pytest.raises(RemoteExtractionError, match="re-run ingest"):
        ingest(corpus, settings, progress=False)
    killer.join()
    assert remote.stats.requests >= 2  # it was killed mid-batch

    with LiveServer(port):  # the endpoint is back: the re-run resumes and finishes
        report = ingest(corpus, settings, progress=False)
    backend = open_backend(settings.backend)
    hits = backend.search("remote", {"query": {"match_all": {}}, "size": 1000})["hits"]["hits"]
    assert report.rejected == 0 and len(hits) == report.chunks_written
    assert len({h["_id"] for h in hits}) == len(hits)  # exactly once
    assert {h["_source"]["doc_id"] for h in hits} == {d["_id"] for d in _abstracts(scifact_sample, 6, skip=100)}
    texts = [h["_source"]["text"] for h in hits]
    expected = get_extractor().extract(texts, "biomedical abstract", TYPE)
    assert [h["_source"].get("latent", {}).get(TYPE, []) for h in hits] == expected


def test_constrained_answers_map_onto_an_option() -> None:
    from latentsearch.models.remote_extractor import closest_option

    options = ["randomized controlled trial", "cohort study", "case report"]
    assert closest_option("Cohort study.", options) == "cohort study"  # normalised exact match
    assert closest_option("It is a case report of one patient", options) == "case report"  # named inside
    assert closest_option("randomised controled trial", options) == "randomized controlled trial"  # closest
