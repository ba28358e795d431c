"""An immutable, in-memory columnar view of one table version, shaped for predicate evaluation.

Each list column becomes `(values, parents)`: the flattened values and the row each belongs to,
so "any value matches" is one vectorised comparison plus a bincount. Strings are dictionary-
encoded; text fields get a lazily built BM25 inverted index (sparse doc x term matrix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from latentsearch.backends.embedded.layout import FieldSpec

TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def analyze(text: str) -> list[str]:
    """Approximation of OpenSearch's `standard` analyzer: Unicode word tokens, lowercased."""
    return TOKEN_RE.findall(text.lower())


@dataclass
class ListColumn:
    """A list<T> column flattened: values[i] belongs to row parents[i]."""

    spec: FieldSpec
    n_rows: int
    values: np.ndarray  # int64/float64/bool, or int32 codes into `vocab` for strings
    parents: np.ndarray
    vocab: list[str] | None = None
    texts: list[list[str]] | None = None  # per-row raw strings for analyzed fields

    def any_row(self, element_mask: np.ndarray) -> np.ndarray:
        """Rows where at least one value satisfies the element mask."""
        if element_mask.size == 0:
            return np.zeros(self.n_rows, dtype=bool)
        return np.bincount(self.parents[element_mask], minlength=self.n_rows) > 0

    def has_value(self) -> np.ndarray:
        return np.bincount(self.parents, minlength=self.n_rows) > 0

    @cached_property
    def code_of(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.vocab or [])}

    @cached_property
    def lower_codes(self) -> tuple[np.ndarray, dict[str, list[int]]]:
        """For case-insensitive term queries: lowercase form -> codes."""
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.vocab or []):
            groups.setdefault(s.lower(), []).append(i)
        return self.values, groups

    @cached_property
    def inverted(self) -> TextIndex:
        assert self.texts is not None
        return TextIndex.build([" ".join(t) for t in self.texts])


@dataclass
class TextIndex:
    """BM25 statistics of one text field (Lucene's BM25 with k1=1.2, b=0.75)."""

    tf: sparse.csc_matrix  # rows x terms
    term_ids: dict[str, int]
    doc_len: np.ndarray
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def build(cls, docs: list[str]) -> TextIndex:
        term_ids: dict[str, int] = {}
        indptr = [0]
        indices: list[int] = []
        data: list[int] = []
        lengths = np.zeros(len(docs), dtype=np.float64)
        for row, doc in enumerate(docs):
            counts: dict[int, int] = {}
            tokens = analyze(doc)
            lengths[row] = len(tokens)
            for tok in tokens:
                tid = term_ids.setdefault(tok, len(term_ids))
                counts[tid] = counts.get(tid, 0) + 1
            indices.extend(counts)
            data.extend(counts.values())
            indptr.append(len(indices))
        csr = sparse.csr_matrix(
            (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(docs), max(len(term_ids), 1)),
        )
        return cls(tf=csr.tocsc(), term_ids=term_ids, doc_len=lengths)

    def term_rows(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows containing the token, term frequencies)."""
        tid = self.term_ids.get(token)
        if tid is None:
            return np.empty(0, dtype=np.int64), np.empty(0)
        start, end = self.tf.indptr[tid], self.tf.indptr[tid + 1]
        return self.tf.indices[start:end], self.tf.data[start:end]

    def bm25(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        rows, freqs = self.term_rows(token)
        if rows.size == 0:
            return rows, freqs
        n_docs = int(np.count_nonzero(self.doc_len)) or 1
        avgdl = float(self.doc_len.sum() / n_docs) or 1.0
        idf = np.log(1 + (n_docs - rows.size + 0.5) / (rows.size + 0.5))
        norm = self.k1 * (1 - self.b + self.b * self.doc_len[rows] / avgdl)
        return rows, idf * freqs / (freqs + norm)


@dataclass
class VectorColumn:
    spec: FieldSpec
    matrix: np.ndarray  # rows x dim float32 (zeros where missing)
    present: np.ndarray  # bool per row

    @cached_property
    def unit(self) -> np.ndarray:
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        return self.matrix / np.where(norms == 0, 1, norms)


@dataclass
class Snapshot:
    """One table version in memory."""

    n_rows: int
    ids: np.ndarray  # object array of _id (or _parent for nested tables)
    sources: list[str]
    columns: dict[str, ListColumn] = field(default_factory=dict)
    vectors: dict[str, VectorColumn] = field(default_factory=dict)
    ords: np.ndarray | None = None  # nested tables: position inside the parent's array
    parent_rows: np.ndarray | None = None  # nested tables: row of the parent in the main snapshot

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {i: r for r, i in enumerate(self.ids.tolist())}


def build_snapshot(table: pa.Table, fields: dict[str, FieldSpec], id_column: str = "_id") -> Snapshot:
    n = table.num_rows
    snap = Snapshot(
        n_rows=n,
        ids=np.asarray(table.column(id_column).to_pylist(), dtype=object),
        sources=table.column("_source").to_pylist(),
    )
    if "_ord" in table.column_names:
        snap.ords = table.column("_ord").to_numpy(zero_copy_only=False)
    for path, spec in fields.items():
        col = table.column(spec.column).combine_chunks() if n else pa.array([], spec.arrow_type())
        if spec.kind == "vector":
            present = col.is_valid().to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=bool)
            matrix = np.zeros((n, spec.dimension), dtype=np.float32)
            if n and present.any():
                filled = col.filter(pa.array(present))
                flat = filled.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                matrix[present] = flat.reshape(-1, spec.dimension)
            snap.vectors[path] = VectorColumn(spec, matrix, present)
            continue
        if n:
            parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False).astype(np.int64)
            flat = pc.list_flatten(col)
        else:
            parents = np.zeros(0, dtype=np.int64)
            flat = pa.array([], spec.arrow_type().value_type)
        vocab = None
        texts = None
        if spec.kind == "str":
            encoded = pc.dictionary_encode(flat) if len(flat) else None
            if encoded is not None:
                vocab = encoded.dictionary.to_pylist()
                values = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            else:
                vocab, values = [], np.zeros(0, dtype=np.int64)
            if spec.analyzed:
                texts = col.to_pylist() if n else []
                texts = [t or [] for t in texts]
        else:
            values = flat.to_numpy(zero_copy_only=False)
        snap.columns[path] = ListColumn(spec, n, values, parents, vocab, texts)
    return snap


def source_of(snapshot: Snapshot, row: int) -> dict[str, Any]:
    import json

    return json.loads(snapshot.sources[row])
