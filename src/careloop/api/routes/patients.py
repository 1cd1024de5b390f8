"""Patient 360 and patient look-ups (identifiers masked for the viewer; see careloop.patients.viewer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from careloop.api.deps import store
from careloop.errors import ConfigError
from careloop.patients import MASKED_VIEWER, PatientView, Viewer
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["patients"])


def viewer() -> Viewer:
    """The viewer a request is served as. Until roles exist (privacy issue) everyone gets the masked
    view; an authenticated role maps to its `Viewer` here, and nowhere else."""
    return MASKED_VIEWER


@router.get("/patients", summary="Find persons by phone or ID number (blind-index look-up)")
def find_patients(
    phone: str | None = Query(None, description="mobile or landline, any common format"),
    id_number: str | None = Query(None, description="resident ID number"),
    s: WorkspaceStore = Depends(store),
    v: Viewer = Depends(viewer),
) -> dict[str, Any]:
    if (phone is None) == (id_number is None):
        raise ConfigError("give exactly one of the query parameters phone or id_number")
    found = PatientView(s, viewer=v).find(phone=phone, id_number=id_number)
    return {"total": len(found), "items": found}


@router.get("/patients/{ident}", summary="Patient 360 of a person id or a SOURCE:KEY record")
def show_patient(
    ident: str,
    events: int = Query(20, ge=0, le=1000, description="most recent events to include"),
    limit: int = Query(200, ge=1, le=5000, description="most recent rows per other list"),
    s: WorkspaceStore = Depends(store),
    v: Viewer = Depends(viewer),
) -> dict[str, Any]:
    return PatientView(s, viewer=v, events_limit=events, list_limit=limit).show(ident)
