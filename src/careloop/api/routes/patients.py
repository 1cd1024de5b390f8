"""Patient 360 and patient look-ups, as the caller's role sees them (careloop.privacy.roles maps each role
to a `Viewer`: field-level masking and sections)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from careloop.api.deps import audit_actor, audit_role, store
from careloop.api.security import requires
from careloop.errors import ConfigError
from careloop.patients import PatientView, Viewer
from careloop.privacy.audit import audit_lookup, audit_patient_read
from careloop.privacy.auth import Principal
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["patients"])


def viewer(principal: Principal = Depends(requires("patients:read"))) -> Viewer:
    """The viewer a request is served as: the authenticated caller's role's `Viewer`, here and nowhere else."""
    return principal.viewer


@router.get("/patients", summary="Find persons by phone or ID number (blind-index look-up)")
def find_patients(
    request: Request,
    phone: str | None = Query(None, description="mobile or landline, any common format"),
    id_number: str | None = Query(None, description="resident ID number"),
    p: Principal = Depends(requires("patients:find")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    if (phone is None) == (id_number is None):
        raise ConfigError("give exactly one of the query parameters phone or id_number")
    view = PatientView(s, viewer=p.viewer)
    found = view.find(phone=phone, id_number=id_number)
    by = "phone" if phone is not None else "id_number"
    audit_lookup(
        s, view.cipher, found, by=by, actor=audit_actor(request), role=audit_role(request), via="api"
    )
    return {"total": len(found), "items": found}


@router.get("/patients/{ident}", summary="Patient 360 of a person id or a SOURCE:KEY record")
def show_patient(
    request: Request,
    ident: str,
    events: int = Query(20, ge=0, le=1000, description="most recent events to include"),
    limit: int = Query(200, ge=1, le=5000, description="most recent rows per other list"),
    v: Viewer = Depends(viewer),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    view = PatientView(s, viewer=v, events_limit=events, list_limit=limit)
    doc = view.show(ident)
    audit_patient_read(
        s,
        view.cipher,
        ident,
        doc["person_id"],
        actor=audit_actor(request),
        role=audit_role(request),
        via="api",
        viewer=v.role,
    )
    return doc
