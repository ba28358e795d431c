"""Operations routes: `/healthz` (liveness + what is loaded; never needs the key) and `/metrics`
(Prometheus text format; needs the key like every other route, unless the server runs with
`--metrics-public`, for scrapers that carry no key: the metrics name routes, models and traffic)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from latentsearch import __version__
from latentsearch.models.registry import loaded_models
from latentsearch.onnx_export.serve.errors import AUTH_ERRORS
from latentsearch.onnx_export.serve.schemas import Health
from latentsearch.onnx_export.serve.security import require_api_key_for_metrics
from latentsearch.onnx_export.serve.services import Services, get_services

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness and loaded models")
async def healthz(services: Services = Depends(get_services)) -> Health:
    c = services.config
    return Health(version=__version__, models_loaded=["/".join(k) for k in loaded_models()],
                  batching={"max_batch": c.max_batch, "max_batch_llm": c.max_batch_llm, "batch_wait_ms": c.batch_wait_ms},
                  index=services.settings.index, backend=services.settings.backend.resolved_kind)


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require_api_key_for_metrics)],
            responses={**AUTH_ERRORS, 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                            "description": "Prometheus text exposition format"}})
async def metrics(services: Services = Depends(get_services)) -> Response:
    return Response(services.metrics.render(), media_type=services.metrics.content_type)
