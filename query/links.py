"""Query side of entity links: filter or boost documents by the KB entities their chunks link to.

Links are nested objects, so the `terms` on `links.entity_id` sits inside a `nested` query; put
`links_filter(...)` in a bool `filter` (or a k-NN `filter`) to keep only documents linking to one of
the ids, or `links_boost(...)` in `should` to rank them higher without dropping the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latentsearch import dsl

LINKS_PATH = "links"
ENTITY_FIELD = "links.entity_id"


def links_filter(entity_ids: Sequence[str], *, min_score: float | None = None) -> dict[str, Any]:
    """Nested query matching chunks with a link to any of `entity_ids` (optionally a link score >= min_score)."""
    ids = [i for i in dict.fromkeys(entity_ids) if i]
    if not ids:
        raise ValueError("no entity ids given: pass KB ids such as those `latentsearch link TEXT` prints")
    inner: dict[str, Any] = dsl.terms(ENTITY_FIELD, ids)
    if min_score is not None:
        inner = dsl.bool_query(filter=[inner, dsl.range_("links.score", gte=min_score)])
    return dsl.nested(LINKS_PATH, inner, score_mode="max")


def links_boost(entity_ids: Sequence[str], *, boost: float = 2.0) -> dict[str, Any]:
    """A `should` clause scoring chunks that link to any of `entity_ids` higher (constant score per match)."""
    clause = links_filter(entity_ids)
    return {"constant_score": {"filter": clause, "boost": boost}}
