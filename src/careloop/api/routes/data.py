"""Workspaces, row counts, ingest runs and the quarantine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from careloop.api.deps import audit_read, backend, store
from careloop.api.security import requires
from careloop.errors import NotFoundError
from careloop.ingest.quarantine import QuarantineView
from careloop.patients.viewer import Viewer, Visibility
from careloop.privacy.auth import Principal
from careloop.storage import Backend, WorkspaceStore
from careloop.storage.queries import entity_counts, ingest_runs

router = APIRouter(prefix="/v1", tags=["data"])


@router.get(
    "/workspaces",
    summary="Workspaces (tenants) in this store",
    dependencies=[Depends(requires("workspaces:read"))],
)
def workspaces(b: Backend = Depends(backend)) -> list[str]:
    return b.workspaces()


@router.get(
    "/stats", summary="Rows per entity in the workspace", dependencies=[Depends(requires("ingest:read"))]
)
def stats(s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return {"workspace": s.workspace, "rows": entity_counts(s)}


@router.get(
    "/ingest/runs",
    summary="Recent ingest runs with per-entity counts",
    dependencies=[Depends(requires("ingest:read"))],
)
def runs(limit: int = Query(20, ge=1, le=500), s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    return ingest_runs(s, limit)


@router.get("/quarantine", summary="Quarantined rows with source, file, line, field and reason")
def quarantine(
    run: str | None = None,
    entity: str | None = None,
    limit: int = Query(50, ge=1, le=5000),
    _: Principal = Depends(requires("quarantine:read")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    view = QuarantineView(s)
    return {
        "total": view.count(run=run, entity=entity),
        "rows": view.list(run=run, entity=entity, limit=limit),
    }


def _raw_shown(viewer: Viewer) -> bool:
    """Whether a viewer sees a quarantined row's original values (masked); roles that see no person data
    (engineer) get the row without them."""
    return viewer.visibility("raw") is not Visibility.HIDDEN


@router.get(
    "/quarantine/{qid}", summary="One quarantined row, original values masked (hidden for some roles)"
)
def quarantine_row(
    qid: str,
    request: Request,
    p: Principal = Depends(requires("quarantine:read")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    row = QuarantineView(s).show(qid)
    if row is None:
        raise NotFoundError(f"no quarantined row {qid!r}")
    if not _raw_shown(p.viewer):
        row["raw"] = None
    else:  # a rejected record's original values were shown (masked by the role)
        audit_read(request, s, "quarantine", target_kind="quarantine", target_id=qid, rows=1)
    return row
