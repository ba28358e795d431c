"""The strictness playground: `/ui` (one HTML page, a little JS, no build step) and the JSON it reads,
`/search/levels` and `/ui/indices`.

`/search/levels` answers one question at every strictness level the rewriter considered: the question's
latent entities and the index values they mapped to, documents per level, the level `auto` chooses and
why, each level's top-k list and the exact OpenSearch request body. The page moves between levels without
asking again, so the control is live. Every search goes through the index's `Retriever` (the one decision
the CLI, /search, /rag and LangChain share), under the same lock as /search.

The page itself holds no data and is served without the API key; the JSON routes take the key like every
other route (the page has a field for it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError, _doc
from latentsearch.onnx_export.serve.schemas import _Strict
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services

PAGE = Path(__file__).with_name("playground.html")

page_router = APIRouter(tags=["playground"])
router = APIRouter(tags=["playground"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS, 404: _doc("The index does not exist")})


class LevelsRequest(_Strict):
    query: str = Field(min_length=1, max_length=4000, description="The question")
    index: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_\-.]*$", description="Default: the server's --index")
    k: int = Field(10, ge=1, le=100)
    mode: str = Field("dense", pattern="^(dense|hybrid)$")
    filter: dict[str, Any] | None = Field(None, description="The shared filter syntax (DSL or shorthand)")


class LevelHit(BaseModel):
    doc_id: str
    title: str | None = None
    score: float
    text: str = Field(description="The first 200 characters of the best chunk")


class Level(BaseModel):
    name: str = Field(description="none, auto, or the number of entities required (loose … strict)")
    msm: int | None = Field(description="minimum_should_match; None = no latent filter")
    documents: int = Field(description="Documents this level keeps (the rewriter's count)")
    hits: list[LevelHit] = Field(description="none: the unfiltered top k; a fixed level: the documents passing "
                                             "its filter; auto: the rewriter's ranking (filtered documents "
                                             "promoted, the unfiltered ranking backfilling)")
    dsl: dict[str, Any] | None = Field(None, description="The OpenSearch request body of this level")


class LevelsResponse(BaseModel):
    query: str
    index: str
    rewritten: bool = Field(description="False: the index has no latent types/values, every level is plain search")
    entities: list[dict[str, Any]] = Field(default_factory=list)
    unmapped: list[dict[str, Any]] = Field(default_factory=list)
    levels: list[Level] = Field(description="none, then 1 … strict, then auto")
    chosen_msm: int | None = None
    reason: str


class IndicesResponse(BaseModel):
    default: str
    indices: list[str]


def _hits(found: Any) -> list[LevelHit]:
    return [LevelHit(doc_id=h.doc_id, title=h.title, score=round(h.score, 5), text=h.text[:200]) for h in found.hits]


def levels(retriever: Any, body: LevelsRequest) -> LevelsResponse:
    """Auto first (it lists the levels and picks one), then each level searched on its own."""
    opts = {"k": body.k, "mode": body.mode, "filter": body.filter, "include_dsl": True}
    auto = retriever.search(body.query, strictness="auto", **opts)
    dense = retriever.search(body.query, strictness="none", **opts)
    out = [Level(name="none", msm=None, documents=dense.total or len(dense.hits), hits=_hits(dense), dsl=dense.dsl)]
    ex = auto.explanation
    if not auto.rewritten or ex is None:
        out.append(Level(name="auto", msm=None, documents=auto.total or len(auto.hits), hits=_hits(auto),
                         dsl=auto.dsl))
        return LevelsResponse(query=body.query, index=retriever.index, rewritten=False, levels=out,
                              reason="plain search: the index has no latent types or values")
    counts = {lv["msm"]: lv["hits"] for lv in ex["levels"]}
    out[0].documents = counts.get(None, out[0].documents)
    clause = retriever.filter_clause(body.filter)
    for msm in sorted(m for m in counts if m is not None):
        # a fixed level lists the documents that pass its filter (no backfill), so the control shows the filter
        found = retriever.rewriter().search(body.query, k=body.k, mode=body.mode, strictness=msm, filter=clause,
                                            include_dsl=True, backfill=False)
        out.append(Level(name=str(msm), msm=msm, documents=counts[msm], hits=_hits(found), dsl=found.dsl))
    out.append(Level(name="auto", msm=ex["chosen_msm"], documents=counts.get(ex["chosen_msm"], len(auto.hits)),
                     hits=_hits(auto), dsl=auto.dsl))
    return LevelsResponse(query=body.query, index=retriever.index, rewritten=True, entities=ex["entities"],
                          unmapped=ex["unmapped"], levels=out, chosen_msm=ex["chosen_msm"], reason=ex["reason"])


@page_router.get("/ui", response_class=HTMLResponse, summary="The strictness playground (a static page; its data calls need the key)")
async def ui() -> HTMLResponse:
    """The strictness playground page (static; it calls /ui/indices and /search/levels)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/ui/indices", response_model=IndicesResponse, summary="Indices the playground can pick")
async def indices(services: Services = Depends(get_services)) -> IndicesResponse:
    def listing() -> list[str]:
        with services.backend_call():
            return sorted(services.backend().list_indices())

    return IndicesResponse(default=services.settings.index, indices=await run_in_threadpool(listing))


@router.post("/search/levels", response_model=LevelsResponse, summary="One question at every strictness level")
async def search_levels(body: LevelsRequest, services: Services = Depends(get_services)) -> LevelsResponse:
    """The question's latent entities, documents and top-k per strictness level, auto's choice and why."""
    loop = asyncio.get_running_loop()
    index = body.index or services.settings.index

    def run() -> LevelsResponse:
        with services.backend_call():
            if not services.backend().index_exists(index):
                raise ApiError(404, f"index `{index}` does not exist", "index_not_found")
            retriever, lock = services.retriever(index, loop)
            with lock:
                try:
                    return levels(retriever, body)
                except ValueError as err:
                    raise ApiError(422, str(err), "invalid_option") from err

    return await run_in_threadpool(run)
