"""The content-addressed cache that ingest (per chunk) and the query side (per question) share:
a model's output is keyed by sha256(model fingerprint + input text), so unchanged text never runs
the model twice, and a changed model (a new fingerprint) never serves a stale answer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class ContentCache:
    """A small sqlite key-value store: (namespace, sha256) -> serialized output."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS cache (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
            "PRIMARY KEY (ns, key))"
        )
        self._lock = threading.Lock()

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(f"SELECT key, value FROM cache WHERE ns=? AND key IN ({marks})", [ns, *part])
                found.update((k, _decode(v)) for k, v in rows)
        return found

    def put_many(self, ns: str, items: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO cache (ns, key, value) VALUES (?, ?, ?)",
                [(ns, k, _encode(v)) for k, v in items.items()],
            )

    def close(self) -> None:
        self._conn.close()


def _encode(value: Any) -> bytes:
    if isinstance(value, np.ndarray):
        return b"F" + np.ascontiguousarray(value, dtype=np.float32).tobytes()
    return b"J" + json.dumps(value, ensure_ascii=False).encode("utf-8")


def _decode(blob: bytes) -> Any:
    if blob[:1] == b"F":
        return np.frombuffer(blob[1:], dtype=np.float32).copy()
    return json.loads(blob[1:].decode("utf-8"))


def content_hash(fingerprint: str, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\x00{text}".encode()).hexdigest()
