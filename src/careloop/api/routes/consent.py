"""The consent ledger over HTTP: a patient's consents, new records (grant, withdraw, refuse), "may we?"."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from careloop.api.deps import audit_read, store
from careloop.api.security import requires
from careloop.clock import Clock
from careloop.config import get_settings
from careloop.privacy import consent as ledger
from careloop.privacy.auth import Principal
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["consent"])

Purpose = Literal[
    "care_follow_up", "service", "marketing", "research", "third_party_sharing", "personalisation"
]
Channel = Literal["sms", "wechat", "app_push", "email", "phone_call"]
Category = Literal["personal", "health", "location", "financial", "biometric", "behaviour"]


class ConsentIn(BaseModel):
    """One consent record to append. A withdrawal or refusal without channel / category covers them all."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["grant", "withdraw", "refuse"]
    purpose: Purpose
    channel: Channel | None = Field(None, description="default: every channel")
    data_category: Category | None = Field(
        None, description="grants: default health; withdrawals and refusals: default every category"
    )
    recipient: str | None = Field(None, max_length=200, description="the third party (third_party_sharing)")
    notice_version: str | None = Field(None, max_length=100, description="the version of the notice shown")
    source: Literal["wechat_form", "app", "paper", "api", "import", "cli"] = "api"
    proof: str | None = Field(
        None,
        max_length=200,
        description="a reference to the proof (form id, signature hash), no personal data",
    )
    guardian_relation: (
        Literal["parent", "mother", "father", "grandparent", "legal_guardian", "other"] | None
    ) = Field(None, description="given by the guardian of a child under 14")
    sensitive: bool = Field(False, description="a separate consent for sensitive data (PIPL Art 29)")
    expires_at: datetime | None = None
    effective_at: datetime | None = Field(None, description="when it was given (default: now)")
    recorded_by: str | None = Field(None, max_length=100)


def _clock(request: Request) -> Clock:
    c: Clock = request.app.state.clock
    return c


def _when(request: Request, at: datetime | None) -> datetime:
    """`at`, or now; a time without a zone is careloop's local time (CARELOOP_TIMEZONE)."""
    if at is None:
        return _clock(request).now()
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(get_settings().timezone))


@router.get(
    "/patients/{ident}/consents", summary="A patient's consents: the answer per purpose and the history"
)
def list_consents(
    ident: str,
    request: Request,
    at: datetime | None = Query(None, description="as at this time (default now)"),
    _: Principal = Depends(requires("consent:read")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    pid = ledger.resolve_person(s, ident)
    when = _when(request, at)
    audit_read(request, s, "consents", person_id=pid)
    return {
        "person_id": pid,
        "at": when,
        "under_14": ledger.under_14(s, pid, at=when),
        "personalisation_off": ledger.personalisation_off(s, pid, at=when),
        "state": [d.to_dict() for d in ledger.state(s, pid, at=when)],
        "history": [r.to_dict() for r in ledger.history(s, pid, at=when)],
    }


@router.post(
    "/patients/{ident}/consents",
    status_code=201,
    summary="Append a consent record: grant, withdraw or refuse (never an update)",
)
def add_consent(
    ident: str,
    body: ConsentIn,
    request: Request,
    caller: Principal = Depends(requires("consent:write")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    """`recorded_by` defaults to the caller (a user or an API key); a system relaying what a patient did in
    its own form may name itself instead."""
    pid = ledger.resolve_person(s, ident)
    fields = body.model_dump(exclude={"action", "purpose"})
    if body.action == ledger.GRANT and fields["data_category"] is None:
        fields["data_category"] = "health"
    fields["recorded_by"] = fields["recorded_by"] or caller.actor
    rec = ledger.record(
        s, pid, body.purpose, body.action, clock=_clock(request), role=caller.role.name, **fields
    )
    return rec.to_dict()


@router.get(
    "/patients/{ident}/consents/check", summary="May we? The answer, the reason and the deciding record"
)
def check_consent(
    ident: str,
    request: Request,
    purpose: Purpose = Query(...),
    channel: Literal["sms", "wechat", "app_push", "email", "phone_call", "outbox", "*"] | None = Query(
        None, description="default: processing that uses no channel"
    ),
    data_category: Category = Query("health"),
    recipient: str | None = Query(None, max_length=200, description="the third party (third_party_sharing)"),
    at: datetime | None = Query(None, description="default now"),
    _: Principal = Depends(requires("consent:read")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    pid = ledger.resolve_person(s, ident)
    return ledger.may(
        s, pid, purpose, channel, at=_when(request, at), data_category=data_category, recipient=recipient
    ).to_dict()
