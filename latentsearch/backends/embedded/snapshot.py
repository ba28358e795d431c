"""An immutable, in-memory columnar view of one table version, shaped for predicate evaluation.

Each list column becomes `(values, parents)`: the flattened values and the row each belongs to,
so "any value matches" is one vectorised comparison plus a bincount. Strings are dictionary-
encoded; text fields get a lazily built BM25 inverted index (sparse doc x term matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from latentsearch.backends.embedded.analysis import analyze
from latentsearch.backends.embedded.layout import FieldSpec

# Lucene stores a field's length in one norm byte (SmallFloat.intToByte4): exact below 24, then
# 4 significant bits. BM25 reads the decoded length back, so scores use it too.
_NORM_FREE = 24


def _int4_decode(code: np.ndarray) -> np.ndarray:
    bits = code & 0x07
    shift = (code >> 3) - 1
    return np.where(shift < 0, bits, (bits | 0x08) << np.maximum(shift, 0))


def _int4_encode(value: np.ndarray) -> np.ndarray:
    value = value.astype(np.int64)
    nbits = np.frexp(value.astype(np.float64))[1].astype(np.int64)  # bit length (0 for 0)
    shift = np.maximum(nbits - 4, 0)
    normal = ((value >> shift) & 0x07) | ((shift + 1) << 3)
    return np.where(nbits < 4, value, normal)


def lucene_length(length: np.ndarray) -> np.ndarray:
    """Field lengths as Lucene's BM25 sees them after the norm byte round trip."""
    n = np.asarray(length, dtype=np.int64)
    free = n < _NORM_FREE
    rest = _NORM_FREE + _int4_decode(_int4_encode(np.maximum(n - _NORM_FREE, 0)))
    return np.where(free, n, rest).astype(np.float64)


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
        return TextIndex.build(self.texts, self.spec.analyzer)


@dataclass
class TextIndex:
    """BM25 statistics of one text field, scored as Lucene's BM25Similarity (k1=1.2, b=0.75):

        idf   = ln(1 + (N - n + 0.5) / (n + 0.5))     N: rows with the field, n: rows with the term
        score = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    dl is the row's token count after analysis, through Lucene's lossy norm byte; avgdl is the exact
    total token count over N (Lucene 8+ dropped the (k1 + 1) factor, which does not change ranking)."""

    tf: sparse.csc_matrix  # rows x terms
    term_ids: dict[str, int]
    doc_len: np.ndarray
    k1: float = 1.2
    b: float = 0.75

    @cached_property
    def stats(self) -> tuple[int, float, np.ndarray]:
        n_docs = int(np.count_nonzero(self.doc_len)) or 1
        avgdl = float(self.doc_len.sum() / n_docs) or 1.0
        return n_docs, avgdl, self.k1 * (1 - self.b + self.b * lucene_length(self.doc_len) / avgdl)

    @classmethod
    def build(cls, docs: list[list[str]] | list[str], analyzer: str | None = None) -> TextIndex:
        """`docs`: per row, its values (a multi-valued field's values are analysed one by one)."""
        term_ids: dict[str, int] = {}
        indptr = [0]
        indices: list[int] = []
        data: list[int] = []
        lengths = np.zeros(len(docs), dtype=np.float64)
        for row, doc in enumerate(docs):
            counts: dict[int, int] = {}
            values = [doc] if isinstance(doc, str) else doc
            tokens = [t for v in values for t in analyze(v, analyzer)]
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
        n_docs, _, norms = self.stats
        idf = np.log(1 + (n_docs - rows.size + 0.5) / (rows.size + 0.5))
        return rows, idf * freqs / (freqs + norms[rows])


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
