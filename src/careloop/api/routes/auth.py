"""Signing in: console tokens (POST /v1/auth/login, refresh), who am I, and the roles table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from careloop.api.security import policy, public, request_store, signed_in, token_key
from careloop.privacy.auth import Principal, issue_token, refresh_token, verify_password
from careloop.privacy.roles import PERMISSIONS, ROLES

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class Login(BaseModel):
    username: str = Field(..., min_length=1, max_length=64, examples=["alice"])
    password: str = Field(..., min_length=1, max_length=1024, examples=["correct horse battery"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(..., description="seconds")
    expires_at: datetime
    workspace: str
    username: str
    role: str
    permissions: list[str]


@router.post(
    "/login",
    summary="Sign in with a user name and password; returns a 15-minute bearer token",
    response_model=TokenOut,
    responses={401: {"description": "wrong user name or password"}, 429: {"description": "locked"}},
    dependencies=[Depends(public("the sign-in itself"))],
)
def login(body: Login, request: Request) -> dict[str, Any]:
    store = request_store(request)
    clock = request.app.state.clock
    p = policy(request)
    principal = verify_password(store, body.username, body.password, policy=p, clock=clock)
    return issue_token(principal, token_key(request), policy=p, clock=clock).as_dict()


@router.post(
    "/refresh",
    summary="A new token for a still-valid one, up to auth_session_hours (8) after signing in",
    response_model=TokenOut,
)
def refresh(request: Request, principal: Principal = Depends(signed_in)) -> dict[str, Any]:
    store = request_store(request)
    return refresh_token(
        store, principal, token_key(request), policy=policy(request), clock=request.app.state.clock
    ).as_dict()


@router.get("/me", summary="The caller: user or API key, workspace, role, permissions and masking")
def me(principal: Principal = Depends(signed_in)) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "name": principal.name,
        "workspace": principal.workspace,
        "role": principal.role.name,
        "permissions": sorted(principal.permissions),
        "scopes": sorted(principal.scopes) if principal.scopes is not None else None,
        "expires_at": principal.expires_at,
        "viewer": _viewer(principal.role.name),
    }


def _viewer(role: str) -> dict[str, Any]:
    v = ROLES[role].viewer
    return {
        "default": v.default.value,
        "kinds": {k: vis.value for k, vis in sorted(v.kinds.items())},
        "sections": sorted(v.sections),
        "records": v.records,
    }


@router.get("/roles", summary="Every role with its permissions and what it sees of a patient")
def roles(principal: Principal = Depends(signed_in)) -> dict[str, Any]:
    return {
        "permissions": PERMISSIONS,
        "roles": [
            {
                "name": r.name,
                "description": r.description,
                "permissions": sorted(r.permissions),
                "viewer": _viewer(r.name),
            }
            for r in ROLES.values()
        ],
    }
