"""The rewriter's strictness decision and value mapping, with inputs the test controls.

The decision (`ladder`, `score_floor`, `decide`/`choose`, `dense_ranking` in query/rewriter.py) is a
pure function of each level's ranking, so every branch is driven here by hand-made hit lists: the
floor (`floor_rank`, `score_floor`, a short list, no list), `min_hits` met exactly (the `>=` rule)
or missed, strict/loose/ints/percents, boost vs tier promotion, backfill. Value mapping runs the
real embedded engine for the vocabulary (a terms aggregation) and a stub embedder whose geometry
the test chooses, so each cosine is known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentsearch.backends.base import BulkAction
from latentsearch.backends.embedded import EmbeddedBackend
from latentsearch.config import EntitySchema
from latentsearch.query.rewriter import (
    EntityMapping,
    QueryRewriter,
    RewriteOptions,
    Vocabulary,
    choose,
    decide,
    dense_ranking,
    ladder,
    score_floor,
)
from latentsearch.query.search import Hit


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(id=f"{d}#0", doc_id=d, chunk=0, score=s, text=d) for d, s in pairs]


def _ids(hits: list[Hit]) -> list[str]:
    return [h.doc_id for h in hits]


MAPPED3 = [EntityMapping(type="field", extracted=e, values=[e]) for e in ("x", "y", "z")]

# ------------------------------------------------------------------------------------------- ladder


@pytest.mark.parametrize(("strictness", "n", "expected"), [
    ("auto", 3, [3, 2, 1, None]),
    ("auto", 1, [1, None]),
    ("strict", 3, [3, None]),
    ("loose", 3, [1, None]),
    ("none", 3, [None]),
    ("auto", 0, [None]),  # nothing mapped: only the unfiltered level
    (2, 3, [2, None]),
    (5, 3, [3, None]),  # more than there are entities: all of them
    ("60%", 3, [1, None]),  # 3 * 60 / 100 = 1.8, truncated toward zero
    ("67%", 3, [2, None]),
    ("100%", 4, [4, None]),
    ("-34%", 3, [2, None]),  # negative percent: all but int(1.02) = 1
    ("10%", 3, [1, None]),  # 0 is clamped to 1: a filter level always requires an entity
])
def test_ladder(strictness, n: int, expected: list) -> None:
    opts = RewriteOptions(strictness=strictness)
    assert ladder(opts.strictness, n) == expected


@pytest.mark.parametrize("bad", [0, -1, "-2", True, "many", "150%", "60"])
def test_bad_strictness_is_refused_with_the_choices(bad) -> None:
    if bad == "60":  # a digit string is an int, and valid
        assert RewriteOptions(strictness=bad).strictness == 60
        return
    with pytest.raises(ValueError, match="strictness|counts entities"):
        RewriteOptions(strictness=bad)


# ------------------------------------------------------------------------------------------- floor

UNFILTERED = _hits(*[(f"u{i:02d}", round(1.0 - i * 0.05, 2)) for i in range(20)])  # 1.00, 0.95, ..., 0.05


@pytest.mark.parametrize(("options", "unfiltered", "expected"), [
    ({"floor_rank": 1}, UNFILTERED, 1.0),
    ({"floor_rank": 5}, UNFILTERED, 0.80),  # the 5th score (rank is 1-based)
    ({"floor_rank": 20}, UNFILTERED, 0.05),
    ({"floor_rank": 50}, UNFILTERED, 0.05),  # shorter list: its last hit
    ({"floor_rank": 5, "score_floor": 0.33}, UNFILTERED, 0.33),  # an absolute floor wins
    ({"floor_rank": 5}, [], None),  # nothing to take a floor from
])
def test_score_floor(options: dict, unfiltered: list[Hit], expected: float | None) -> None:
    assert score_floor(unfiltered, RewriteOptions(**options)) == expected


# ------------------------------------------------------------------------------------------- choose

LEVELS3 = [3, 2, 1, None]


def _level(n_above: int, n_below: int, floor: float, tag: str) -> list[Hit]:
    """n_above hits scoring floor, floor+0.01, ... (the first exactly AT the floor), then n_below under it."""
    above = [(f"{tag}a{i}", round(floor + 0.01 * i, 4)) for i in range(n_above)][::-1]
    below = [(f"{tag}b{i}", round(floor - 0.01 * (i + 1), 4)) for i in range(n_below)]
    return _hits(*above, *below)


# floor_rank 5 on UNFILTERED -> floor 0.80; min_hits 3; the levels' documents above the floor:
AUTO_CASES = [
    # (above per level 3/2/1, options, chosen, reason fragment)
    ((3, 5, 9), {}, 3, "strictest level with >= 3"),  # exactly min_hits at the strictest level: taken
    ((2, 3, 9), {}, 2, "2 of 3 entities (3 documents)"),  # one short at 3 -> next level
    ((2, 2, 3), {}, 1, "1 of 3"),
    ((0, 1, 2), {}, None, "no level kept 3 documents above the floor"),
    ((0, 1, 2), {"min_hits": 2}, 1, "1 of 3"),
    ((1, 1, 1), {"min_hits": 1}, 3, "3 of 3"),
    ((5, 5, 5), {"min_hits": 6}, None, "no level kept 6"),
]


@pytest.mark.parametrize(("above", "options", "chosen", "reason"), AUTO_CASES)
def test_auto_takes_the_strictest_level_with_min_hits_at_or_above_the_floor(above, options, chosen, reason) -> None:
    opts = RewriteOptions(**{"strictness": "auto", "min_hits": 3, "floor_rank": 5, **options})
    ranked = [_level(n, 4, 0.80, f"l{i}") for i, n in enumerate(above)] + [UNFILTERED]
    floor, reports, got, why = decide(LEVELS3, ranked, opts, MAPPED3, [])
    assert floor == 0.80
    assert [r.above_floor for r in reports] == [*above, 5]  # a hit exactly at the floor counts
    assert [r.hits for r in reports] == [n + 4 for n in above] + [20]
    assert [r.msm for r in reports] == LEVELS3
    assert got == chosen and reason in why


def test_an_absolute_score_floor_replaces_floor_rank() -> None:
    ranked = [_level(2, 0, 0.5, "a"), _level(3, 0, 0.5, "b"), _level(9, 0, 0.5, "c"), UNFILTERED]
    opts = RewriteOptions(strictness="auto", min_hits=3, floor_rank=5, score_floor=0.5)
    floor, reports, chosen, _ = decide(LEVELS3, ranked, opts, MAPPED3, [])
    assert floor == 0.5 and chosen == 2
    assert reports[-1].above_floor == 11  # unfiltered scores 1.00 .. 0.50


def test_with_no_unfiltered_hits_every_hit_counts() -> None:
    ranked = [_hits(("a", 0.1)), _hits(("a", 0.1), ("b", 0.01)), _hits(("a", 0.1), ("b", 0.01)), []]
    floor, reports, chosen, _ = decide(LEVELS3, ranked, RewriteOptions(min_hits=2), MAPPED3, [])
    assert floor is None and [r.above_floor for r in reports] == [1, 2, 2, 0] and chosen == 2


@pytest.mark.parametrize(("strictness", "levels", "chosen", "reason"), [
    ("strict", [3, None], 3, "strictness strict: 3 of 3"),
    ("loose", [1, None], 1, "strictness loose: 1 of 3"),
    (2, [2, None], 2, "strictness 2: 2 of 3"),
    ("67%", [2, None], 2, "strictness 67%: 2 of 3"),
])
def test_fixed_strictness_ignores_the_floor(strictness, levels, chosen, reason) -> None:
    """A fixed strictness is applied even when its level has nothing above the floor."""
    opts = RewriteOptions(strictness=strictness, min_hits=5)
    assert ladder(opts.strictness, 3) == levels
    ranked = [[], UNFILTERED]
    floor, reports, got, why = decide(levels, ranked, opts, MAPPED3, [])
    assert reports[0].above_floor == 0 and got == chosen and why == reason + " entities required"


@pytest.mark.parametrize(("mapped", "unmapped", "reason"), [
    ([], [], "no latent entities extracted; unfiltered"),
    ([], [EntityMapping(type="field", extracted="q", values=[])], "no extracted entity exists in the index; unfiltered"),
])
def test_nothing_mapped_is_unfiltered_with_the_reason(mapped, unmapped, reason) -> None:
    for strictness in ("auto", "strict", 2):
        chosen, why = choose([None], [], RewriteOptions(strictness=strictness), mapped, unmapped)
        assert chosen is None and why == reason


# ------------------------------------------------------------------------------------------- promotion

# unfiltered: u1 .90, u2 .85, m3 .84, u4 .83, m5 .80, u6 .79, m7 .70; the chosen level holds m3, m5, m7
DENSE = _hits(("u1", 0.90), ("u2", 0.85), ("m3", 0.84), ("u4", 0.83), ("m5", 0.80), ("u6", 0.79), ("m7", 0.70))
LEVEL = _hits(("m3", 0.84), ("m5", 0.80), ("m7", 0.70))


@pytest.mark.parametrize(("options", "chosen", "expected", "scores"), [
    # boost 0.02: m3 .86 passes u2 .85; m5 .82 stays behind u4 .83; m7 .72 stays last
    ({"promotion": "boost", "boost": 0.02}, 2, ["u1", "m3", "u2", "u4", "m5", "u6", "m7"],
     [0.90, 0.86, 0.85, 0.83, 0.82, 0.79, 0.72]),
    # boost 0.12: every filtered document gains 0.12, m7 (below the floor) too, and the order follows
    ({"promotion": "boost", "boost": 0.12}, 2, ["m3", "m5", "u1", "u2", "u4", "m7", "u6"],
     [0.96, 0.92, 0.90, 0.85, 0.83, 0.82, 0.79]),
    ({"promotion": "boost", "boost": 0.0}, 2, _ids(DENSE), [h.score for h in DENSE]),
    ({"promotion": "boost", "boost": 0.02, "k": 3}, 2, ["u1", "m3", "u2"], [0.90, 0.86, 0.85]),
    # tier, floor .80: m3 and m5 (at the floor) first in level order, m7 (below) keeps its rank
    ({"promotion": "tier"}, 2, ["m3", "m5", "u1", "u2", "u4", "u6", "m7"], None),
    ({"promotion": "tier", "k": 2}, 2, ["m3", "m5"], None),
    # no backfill: the level alone
    ({"promotion": "tier", "backfill": False}, 2, ["m3", "m5", "m7"], None),
    ({"promotion": "boost", "backfill": False}, 2, ["m3", "m5", "m7"], [0.84, 0.80, 0.70]),
    # no filter chosen: the level is the unfiltered list, untouched
    ({"promotion": "boost", "boost": 0.5}, None, _ids(DENSE), [h.score for h in DENSE]),
])
def test_dense_ranking(options: dict, chosen, expected: list[str], scores) -> None:
    opts = RewriteOptions(**options)
    level = DENSE if chosen is None else LEVEL
    got = dense_ranking(level, DENSE, chosen, 0.80, opts)
    assert _ids(got) == expected
    if scores is not None:
        assert [h.score for h in got] == pytest.approx(scores)
    assert len(set(_ids(got))) == len(got)  # each document once


def test_boost_never_removes_a_document_and_tier_keeps_unfiltered_order_below() -> None:
    opts = RewriteOptions(promotion="tier", k=10)
    got = dense_ranking(LEVEL, DENSE, 1, 0.80, opts)
    rest = [d for d in _ids(got) if d not in ("m3", "m5")]
    assert rest == [d for d in _ids(DENSE) if d not in ("m3", "m5")]
    assert set(_ids(dense_ranking(LEVEL, DENSE, 1, 0.80, RewriteOptions(boost=0.3)))) == set(_ids(DENSE))


# ------------------------------------------------------------------------------------------- value mapping


def _unit(cos: float) -> list[float]:
    """A unit vector whose cosine with E = [1, 0, 0] is exactly `cos`."""
    return [cos, math.sqrt(1 - cos * cos), 0.0]


GEOMETRY = {  # the stub embedder's world: cosine with the entity "heart disease" = the first component
    "heart disease": [1.0, 0.0, 0.0],
    "cardiology": _unit(0.9),
    "cardiac surgery": _unit(0.8),
    "vascular biology": _unit(0.5),  # exactly at a 0.5 threshold
    "oncology": _unit(0.3),
    "T-Cells": [0.0, 0.0, 1.0],
    "t cell": [0.0, 0.0, 1.0],
    "Heart Diseases": _unit(0.6),  # normalises to "heart disease"
    "gravity": [0.0, -1.0, 0.0],  # negative or zero cosine with every value
}


class StubEmbedder:
    """Vectors chosen by the test; an unknown text is an error, so nothing is embedded by accident."""

    calls: list[list[str]]

    def __init__(self) -> None:
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.asarray([GEOMETRY[t] for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def vocab_backend(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBackend:
    b = EmbeddedBackend(tmp_path_factory.mktemp("vocab") / "db")
    b.create_index("v", {"mappings": {"properties": {"latent": {"properties": {"field": {"type": "keyword"}}}}}})
    values = ["cardiology", "cardiac surgery", "vascular biology", "oncology", "t cell", "Heart Diseases"]
    b.bulk("v", [BulkAction(str(i), {"latent": {"field": [v]}}) for i, v in enumerate(values)])
    return b


@pytest.fixture()
def vocabulary(vocab_backend: EmbeddedBackend) -> Vocabulary:
    vocab = Vocabulary(vocab_backend, "v", StubEmbedder())
    vocab.load(["field"])
    return vocab


E = np.asarray(GEOMETRY["heart disease"], dtype=np.float32)


@pytest.mark.parametrize(("entity", "top_n", "min_sim", "vector", "expected"), [
    # normalised match first, then the nearest above the threshold, best first
    ("heart disease", 2, 0.75, E, {"Heart Diseases": "normalised", "cardiology": "nearest:0.90",
                                   "cardiac surgery": "nearest:0.80"}),
    ("heart disease", 1, 0.75, E, {"Heart Diseases": "normalised", "cardiology": "nearest:0.90"}),
    ("heart disease", 5, 0.85, E, {"Heart Diseases": "normalised", "cardiology": "nearest:0.90"}),
    ("heart disease", 5, 0.5, E, {"Heart Diseases": "normalised", "cardiology": "nearest:0.90",
                                  "cardiac surgery": "nearest:0.80",
                                  "vascular biology": "nearest:0.50"}),  # at the threshold: kept
    ("heart disease", 0, 0.0, E, {"Heart Diseases": "normalised"}),  # top_n 0: no nearest values
    ("heart disease", 3, 0.75, None, {"Heart Diseases": "normalised"}),  # no vector: no nearest
    ("cardiology", 0, 0.75, None, {"cardiology": "exact"}),
    ("T-Cells", 0, 0.75, None, {"t cell": "normalised"}),
    ("zebrafish", 0, 0.75, None, {}),
])
def test_vocabulary_map(vocabulary: Vocabulary, entity, top_n, min_sim, vector, expected) -> None:
    assert vocabulary.map("field", entity, top_n, min_sim, vector) == expected


def test_an_exact_value_is_not_repeated_as_nearest(vocabulary: Vocabulary) -> None:
    vec = np.asarray(GEOMETRY["cardiology"], dtype=np.float32)
    got = vocabulary.map("field", "cardiology", 1, 0.0, vec)
    assert got == {"cardiology": "exact", "cardiac surgery": f"nearest:{float(np.float32(_unit(0.8)) @ vec):.2f}"}


def test_map_entities_through_the_rewriter_splits_mapped_and_unmapped(vocab_backend: EmbeddedBackend) -> None:
    stub = StubEmbedder()
    schema = EntitySchema(latent_types=[{"name": "field", "description": "research field"}])
    rw = QueryRewriter(vocab_backend, "v", stub, extractor=None, schema=schema)
    opts = RewriteOptions(map_top_n=1, map_min_similarity=0.85)
    mapped, unmapped = rw.map_entities({"field": ["heart disease", "T-Cells", "gravity"]}, opts)
    assert [(m.extracted, m.values) for m in mapped] == [
        ("heart disease", ["Heart Diseases", "cardiology"]), ("T-Cells", ["t cell"])]
    assert [(m.extracted, m.values) for m in unmapped] == [("gravity", [])]
    assert stub.calls[-1] == ["heart disease", "T-Cells", "gravity"]  # the entities, embedded in one call
    mapped, unmapped = rw.map_entities({"field": ["heart disease"]}, RewriteOptions(map_top_n=0))
    assert mapped[0].values == ["Heart Diseases"] and not unmapped
