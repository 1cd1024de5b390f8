"""Data-subject requests, retention plan and safe exports over HTTP (same operations as `careloop dsr | export`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from careloop.api.deps import audit_actor, audit_role, store
from careloop.api.security import requires
from careloop.errors import ConfigError
from careloop.privacy import dsr
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["privacy"])


class OpenRequest(BaseModel):
    person_id: str = Field(..., description="the unified person id (verify the requester first)")
    kind: str = Field(..., description="access | copy | correction | deletion")
    received_at: datetime | None = Field(None, description="when the request arrived (default: now)")
    note: str | None = Field(None, description="how it arrived, how identity was checked (no identifiers)")


class Correction(BaseModel):
    field: str = Field(
        ..., description="name, phone, id_number, address, sex, birth_date, province, city, ..."
    )
    value: str = Field(..., description="the corrected value")
    reason: str = Field(..., description="why (kept in identity history and the register)")


class Close(BaseModel):
    note: str | None = None
    reject: bool = False


class Aggregate(BaseModel):
    by: list[str] = Field(
        ..., description="quasi-identifiers: age_band, sex, province, city, district or traits"
    )
    measure: str = Field("count", description="count, mean:TRAIT or sum:TRAIT")
    k: int | None = Field(None, ge=2, description="minimum persons per cell (default CARELOOP_EXPORT_K)")


def _cipher(request: Request) -> Any:
    from careloop.privacy.fields import FieldCipher
    from careloop.privacy.keys import load_keyring

    s = request.app.state.settings
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock.now()
    return now


@router.post("/dsr", summary="Register a data-subject request", dependencies=[Depends(requires("dsr:write"))])
def open_request(request: Request, body: OpenRequest, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    req = dsr.open_request(
        s,
        body.person_id,
        body.kind,
        received_at=body.received_at,
        note=body.note,
        actor=audit_actor(request),
        clock=request.app.state.clock,
        settings=request.app.state.settings,
    )
    return req.as_dict(_now(request))


@router.get(
    "/dsr", summary="The register, due first (deadline tracker)", dependencies=[Depends(requires("dsr:read"))]
)
def list_requests(
    request: Request,
    overdue: bool = Query(False, description="only open requests past their due time"),
    status: str | None = Query(None, description="open | done | closed | rejected"),
    s: WorkspaceStore = Depends(store),
) -> list[dict[str, Any]]:
    now = _now(request)
    return [
        r.as_dict(now)
        for r in dsr.list_requests(s, status=status, overdue=overdue, clock=request.app.state.clock)
    ]


@router.get(
    "/dsr/{request_id}",
    summary="One request with its result and certificate",
    dependencies=[Depends(requires("dsr:read"))],
)
def show(request: Request, request_id: str, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return dsr.get_request(s, request_id).as_dict(_now(request))


@router.post(
    "/dsr/{request_id}/access",
    summary="Carry out an access / copy request: the complete export (JSON)",
    dependencies=[Depends(requires("dsr:write"))],
)
def access(request: Request, request_id: str, s: WorkspaceStore = Depends(store)) -> Response:
    body, _ = dsr.access_export(
        s, request_id, cipher=_cipher(request), actor=audit_actor(request), clock=request.app.state.clock
    )
    return Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{request_id}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/dsr/{request_id}/correct",
    summary="Carry out a correction request on the golden record",
    dependencies=[Depends(requires("dsr:write"))],
)
def correct(
    request: Request, request_id: str, body: Correction, s: WorkspaceStore = Depends(store)
) -> dict[str, Any]:
    return dsr.correct(
        s,
        request_id,
        body.field,
        body.value,
        reason=body.reason,
        cipher=_cipher(request),
        actor=audit_actor(request),
        clock=request.app.state.clock,
    )


@router.post(
    "/dsr/{request_id}/erase",
    summary="Carry out a deletion request; returns the deletion certificate",
    dependencies=[Depends(requires("dsr:write"))],
)
def erase(
    request: Request,
    request_id: str,
    confirm: bool = Body(..., embed=True, description="true: delete the person's data for good"),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    if not confirm:
        raise ConfigError("erasure cannot be undone: send confirm=true")
    return dsr.erase(
        s, request_id, cipher=_cipher(request), actor=audit_actor(request), clock=request.app.state.clock
    )


@router.post(
    "/dsr/{request_id}/close",
    summary="Close or reject a request",
    dependencies=[Depends(requires("dsr:write"))],
)
def close(
    request: Request, request_id: str, body: Close, s: WorkspaceStore = Depends(store)
) -> dict[str, Any]:
    req = dsr.close_request(
        s,
        request_id,
        note=body.note,
        reject=body.reject,
        actor=audit_actor(request),
        clock=request.app.state.clock,
    )
    return req.as_dict(_now(request))


@router.get(
    "/segments/{name}/export",
    summary="A segment's members (person ids) for use outside careloop; a purpose is required and audited",
    dependencies=[Depends(requires("export:person_level"))],
)
def segment_export(
    request: Request,
    name: str,
    purpose: str = Query(..., description="why the members leave careloop (recorded in the audit log)"),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    from careloop.privacy.audit import audit_event
    from careloop.privacy.export import check_purpose
    from careloop.profiles.segments import stored_members

    purpose = check_purpose(purpose)
    total, rows = stored_members(s, name)
    audit_event(
        s,
        actor=audit_actor(request),
        role=audit_role(request),
        action="export",
        target_kind="segment",
        target_id=name,
        purpose=purpose,
        detail={"rows": total},
    )
    return {"segment": name, "purpose": purpose, "total": total, "items": rows}


@router.post(
    "/exports/aggregate",
    summary="Persons counted by quasi-identifiers, cells under k suppressed",
    dependencies=[Depends(requires("export:aggregate"))],
)
def aggregate(request: Request, body: Aggregate, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    from careloop.privacy.audit import audit_event
    from careloop.privacy.export import aggregate as do_aggregate

    result = do_aggregate(s, body.by, body.measure, k=body.k, clock=request.app.state.clock)
    audit_event(
        s,
        actor=audit_actor(request),
        role=audit_role(request),
        action="export",
        target_kind="aggregate",
        target_id=",".join(body.by)[:200],
        detail={"cells": result["cells"], "suppressed": result["suppressed"], "k": result["k"]},
    )
    return result


@router.get(
    "/retention/plan",
    summary="Retention dry run: rows past their period per table (nothing deleted)",
    dependencies=[Depends(requires("dsr:read"))],
)
def retention_plan(request: Request, s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    from careloop.privacy.retention import plan

    return [orjson.loads(orjson.dumps(ln.as_dict())) for ln in plan(s, clock=request.app.state.clock)]
