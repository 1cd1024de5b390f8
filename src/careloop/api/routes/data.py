"""Workspaces, row counts, ingest runs and the quarantine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from careloop.api.deps import backend, store
from careloop.errors import NotFoundError
from careloop.ingest.quarantine import QuarantineView
from careloop.storage import Backend, WorkspaceStore
from careloop.storage.queries import entity_counts, ingest_runs

router = APIRouter(prefix="/v1", tags=["data"])


@router.get("/workspaces", summary="Workspaces (tenants) in this store")
def workspaces(b: Backend = Depends(backend)) -> list[str]:
    return b.workspaces()


@router.get("/stats", summary="Rows per entity in the workspace")
def stats(s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return {"workspace": s.workspace, "rows": entity_counts(s)}


@router.get("/ingest/runs", summary="Recent ingest runs with per-entity counts")
def runs(limit: int = Query(20, ge=1, le=500), s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    return ingest_runs(s, limit)


@router.get("/quarantine", summary="Quarantined rows with source, file, line, field and reason")
def quarantine(
    run: str | None = None,
    entity: str | None = None,
    limit: int = Query(50, ge=1, le=5000),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    view = QuarantineView(s)
    return {
        "total": view.count(run=run, entity=entity),
        "rows": view.list(run=run, entity=entity, limit=limit),
    }


@router.get("/quarantine/{qid}", summary="One quarantined row, original values masked")
def quarantine_row(qid: str, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    row = QuarantineView(s).show(qid)
    if row is None:
        raise NotFoundError(f"no quarantined row {qid!r}")
    return row
