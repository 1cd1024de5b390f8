"""Health, readiness and the data dictionary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from careloop import __version__
from careloop.api.deps import backend
from careloop.api.security import public, requires
from careloop.domain import entities
from careloop.storage import Backend
from careloop.storage.migrations import LATEST_VERSION
from careloop.storage.queries import data_dictionary

router = APIRouter(tags=["system"])


@router.get(
    "/health",
    summary="Liveness: the process answers",
    dependencies=[Depends(public("liveness probe, no data"))],
)
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    summary="Readiness: the store answers, its schema is current, collection runs",
    dependencies=[Depends(public("readiness probe, no personal data"))],
)
def ready(request: Request, b: Backend = Depends(backend)) -> Response:
    version = b.schema_version()
    collector = getattr(request.app.state, "collector", None)
    collecting = bool(collector is not None and collector.started)
    ok = version == LATEST_VERSION and collecting
    body = {
        "status": "ready" if ok else ("migrating" if version != LATEST_VERSION else "starting"),
        "schema_version": version,
        "collecting": collecting,
        "stream": collector.stream.name if collector is not None else None,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics: events received / stored / quarantined, stream lag",
    dependencies=[
        Depends(public("counters only, no personal data; serve on 127.0.0.1 or restrict at the proxy"))
    ],
)
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    collector = getattr(request.app.state, "collector", None)
    body = generate_latest(collector.metrics.registry) if collector is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/schema",
    summary="Data dictionary: every entity with its columns, classes and levels",
    dependencies=[Depends(requires("schema:read"))],
)
def schema() -> dict[str, Any]:
    return {name: data_dictionary(name) for name in entities()}


@router.get(
    "/v1/schema/{entity}",
    summary="Data dictionary of one entity",
    dependencies=[Depends(requires("schema:read"))],
)
def schema_entity(entity: str) -> dict[str, Any]:
    return data_dictionary(entity)
