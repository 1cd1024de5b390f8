"""Health, readiness and the data dictionary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from careloop import __version__
from careloop.api.deps import backend
from careloop.domain import entities
from careloop.storage import Backend
from careloop.storage.migrations import LATEST_VERSION
from careloop.storage.queries import data_dictionary

router = APIRouter(tags=["system"])


@router.get("/health", summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", summary="Readiness: the store answers and its schema is current")
def ready(b: Backend = Depends(backend)) -> dict[str, Any]:
    version = b.schema_version()
    return {"status": "ready" if version == LATEST_VERSION else "migrating", "schema_version": version}


@router.get("/v1/schema", summary="Data dictionary: every entity with its columns, classes and levels")
def schema() -> dict[str, Any]:
    return {name: data_dictionary(name) for name in entities()}


@router.get("/v1/schema/{entity}", summary="Data dictionary of one entity")
def schema_entity(entity: str) -> dict[str, Any]:
    return data_dictionary(entity)
