"""Fault injection (issue 14, `-m slow`): two `latentsearch ingest` processes write the same ids into
one embedded index at once, one or both are killed with SIGKILL at random moments, then both are
re-run to completion (resuming from their checkpoints). Afterwards the index must hold exactly the
chunks a clean single ingest produces: no duplicates, no losses.

    .venv/bin/python -m pytest -m slow tests/test_fault_injection.py -s

prints one line per trial and a total (the README's "Reliability" section quotes it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentsearch.backends.embedded import EmbeddedBackend

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RECORDS = 200  # SciFact abstracts per corpus copy
TRIALS = 4


def _ingest(home: Path, corpus: Path, index: str) -> subprocess.Popen:
    env = {**os.environ, "LATENTSEARCH_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("LATENTSEARCH_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "latentsearch.cli", "ingest", str(corpus), "--index", index,
                             "--no-latent", "--no-progress", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _has_rows(home: Path, index: str) -> bool:
    try:
        return EmbeddedBackend(home / "db").db.open_table(index).count_rows() > 0
    except Exception:  # not created yet
        return False


def _rows(home: Path, index: str) -> list[str]:
    return EmbeddedBackend(home / "db").db.open_table(index).to_arrow().column("_id").to_pylist()


def test_kill_9_during_concurrent_ingests_loses_and_duplicates_nothing(tmp_path: Path, scifact_sample: Path) -> None:
    lines = scifact_sample.read_bytes().splitlines()[:RECORDS]
    copies = []
    for name in ("a", "b"):  # two files with the same ids: two writers of the same chunks
        path = tmp_path / f"corpus-{name}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        copies.append(path)
    home = tmp_path / "home"
    ref = _ingest(home, copies[0], "reference")
    assert ref.wait(timeout=900) == 0, ref.stderr.read().decode()[-2000:]
    expected = set(_rows(home, "reference"))
    rng = random.Random(14)
    totals = {"kills": 0, "rows": 0, "duplicates": 0, "losses": 0}
    for trial in range(TRIALS):
        index = f"fi-{trial}"
        procs = [_ingest(home, c, index) for c in copies]
        victims = [0, 1] if trial % 2 else [rng.randrange(2)]  # odd trials kill both writers
        started = time.monotonic()  # wait for the first rows (model load comes first), then a random delay
        while not _has_rows(home, index) and any(p.poll() is None for p in procs) and time.monotonic() - started < 600:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 6.0))
        kills = 0
        for v in victims:
            if procs[v].poll() is None:
                procs[v].send_signal(signal.SIGKILL)
                kills += 1
        for p in procs:
            p.wait(timeout=900)
        reruns = [_ingest(home, c, index) for c in copies]  # both resume from their checkpoints
        for p in reruns:
            assert p.wait(timeout=900) == 0, p.stderr.read().decode()[-2000:]
        rows = _rows(home, index)
        dupes, lost = len(rows) - len(set(rows)), len(expected - set(rows))
        totals["kills"] += kills
        totals["rows"] += len(rows)
        totals["duplicates"] += dupes
        totals["losses"] += lost + len(set(rows) - expected)
        print(f"trial {trial}: records in {RECORDS} x 2 writers, chunks expected {len(expected)}, rows {len(rows)}, "
              f"kill -9s {kills}, duplicates {dupes}, losses {lost}")
        assert dupes == 0 and lost == 0 and set(rows) == expected
        report = json.loads(reruns[0].stdout.read())
        assert report["rejected"] == 0
    print(f"total: {TRIALS} trials, {totals['kills']} kill -9s, rows {totals['rows']}, "
          f"duplicates {totals['duplicates']}, losses {totals['losses']}")
