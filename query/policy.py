"""A fitted latent policy: how one index's questions use their latent entities, stored with the index.

`latentsearch tune strictness` fits it on judged queries (cross-validated) and saves it; the rewriter reads it
as its defaults on that index, and options given per call still win. Without one, RewriteOptions' defaults apply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LatentPolicy(BaseModel):
    """RewriteOptions fields a fit chooses (same names, same meaning), plus what it was fitted on."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["dense", "hybrid"] = "hybrid"
    strictness: Literal["auto", "strict", "loose", "none"] | int = "auto"
    promotion: Literal["tier", "boost", "rrf"] = "rrf"
    latent_weight: float = Field(0.5, ge=0)
    types: list[str] | None = None
    entities: Literal["free", "chosen"] = "free"
    min_confidence: float = Field(0.3, ge=0, le=1)
    values_per_type: int = Field(1, ge=1, le=10)
    fitted: dict[str, Any] = Field(default_factory=dict, description="queries, folds, seed, held-out figures")

    def options(self) -> dict[str, Any]:
        """The rewriter options this policy sets (`mode` is the caller's choice and is not among them)."""
        return self.model_dump(exclude={"fitted", "mode"})


POLICY_ID = "policy"


def load_policy(backend: Any, index: str) -> LatentPolicy | None:
    """The policy stored with `index` (a document of its vocabulary sidecar), or None."""
    from latentsearch.ingest.vocabulary import vocab_index

    try:
        side = vocab_index(index)
    except ValueError:
        return None
    if not backend.index_exists(side):
        return None
    raw = (backend.get(side, POLICY_ID) or {}).get("policy")
    return LatentPolicy.model_validate_json(raw) if raw else None


def save_policy(backend: Any, index: str, policy: LatentPolicy) -> None:
    """Store `policy` with `index` (beside its vocabulary: every backend, no mapping change on the index)."""
    from latentsearch.backends import BulkAction
    from latentsearch.ingest.vocabulary import vocab_index, vocab_index_body

    side = vocab_index(index)
    backend.create_index(side, vocab_index_body(), exist_ok=True)
    results = backend.bulk(side, [BulkAction(id=POLICY_ID, source={"kind": "policy",
                                                                    "policy": policy.model_dump_json()})],
                           refresh=True)
    bad = [r for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"storing the policy of `{index}` failed: {bad[0]}")


def delete_policy(backend: Any, index: str) -> bool:
    """Remove the stored policy (auto goes back to the built-in ladder). Whether there was one."""
    from latentsearch.backends import BulkAction
    from latentsearch.ingest.vocabulary import vocab_index

    side = vocab_index(index)
    if not backend.index_exists(side) or load_policy(backend, index) is None:
        return False
    backend.bulk(side, [BulkAction(id=POLICY_ID, op="delete")], refresh=True)
    return True
