"""The small real data shipped inside the package, so a fresh install can ingest and query at once:
500 SciFact abstracts (CC BY 4.0) and judged claims over them."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
SAMPLE_CORPUS = DATA / "scifact-sample.jsonl"
SAMPLE_QUERIES = DATA / "scifact-sample-queries.jsonl"
