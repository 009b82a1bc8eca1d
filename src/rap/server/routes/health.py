"""``/healthz`` (the process answers), ``/readyz`` (models loaded: send it traffic), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rap.errors import NotReady
from rap.server.auth import RuntimeDep
from rap.server.errors import rap_error_response
from rap.server.schemas import ErrorBody, Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": ErrorBody, "description": "still loading models, or failed to"}},
    summary="Readiness: models loaded, send traffic",
)
async def readyz(rt: RuntimeDep) -> dict | Response:
    if rt.load_error is not None:
        return rap_error_response(NotReady(f"loading the models failed: {rt.load_error}"))
    if not rt.ready.is_set():
        return rap_error_response(NotReady("loading the models"))
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics(rt: RuntimeDep) -> Response:
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
