"""Deny by default: every route declares either the permission it needs or why it is public.

- ``Depends(requires("patients:read"))`` authenticates the caller (``Authorization: Bearer`` with a
  console token from ``POST /v1/auth/login`` or an API key ``cak_…``) in the request's workspace
  (``X-Careloop-Workspace``, default from settings) and checks its role holds the permission; the
  dependency's value is the `Principal` (whose ``viewer`` is the role's field-level masking).
- ``Depends(requires_for("action", {...}))``: the permission depends on a path parameter.
- ``Depends(signed_in)``: any authenticated caller (its own session).
- ``Depends(public("why"))``: no authentication, with the reason (the Segment collection API checks
  write keys, provider callbacks check signatures, health and metrics carry no personal data).

`tests/api/test_access_matrix.py` walks every route of the app: a route with neither fails it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from careloop.errors import WorkspaceError
from careloop.privacy.auth import (
    AccessEvent,
    AuthenticationError,
    AuthPolicy,
    PermissionDenied,
    Principal,
    authenticate,
    on_access,
    signing_key,
)
from careloop.privacy.roles import check_permission
from careloop.storage import Backend, WorkspaceStore

bearer = HTTPBearer(
    auto_error=False,
    description="a console token (POST /v1/auth/login) or an API key (cak_…, `careloop apikey create`)",
)


def token_key(request: Request) -> bytes:
    """The app's token signing key (from settings or the key ring; read once)."""
    key: bytes | None = getattr(request.app.state, "token_key", None)
    if key is None:
        key = signing_key(request.app.state.settings)
        request.app.state.token_key = key
    return key


def policy(request: Request) -> AuthPolicy:
    p: AuthPolicy | None = getattr(request.app.state, "auth_policy", None)
    if p is None:
        p = AuthPolicy.from_settings(request.app.state.settings)
        request.app.state.auth_policy = p
    return p


def request_store(request: Request) -> WorkspaceStore:
    """The workspace a request acts in, or 401 (a workspace that does not exist has no credentials)."""
    b: Backend = request.app.state.backend
    workspace = request.headers.get("x-careloop-workspace") or request.app.state.settings.workspace
    try:
        return b.workspace(workspace, create=False)
    except WorkspaceError:
        raise AuthenticationError(f"no credentials are valid in workspace {workspace!r}") from None


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '?')}"


def authenticated(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Principal:
    """The caller, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthenticationError(
            "sign in: send Authorization: Bearer TOKEN (POST /v1/auth/login) or an API key "
            "(careloop apikey create)"
        )
    store = request_store(request)
    try:
        principal = authenticate(
            store, credentials.credentials, token_key(request), clock=request.app.state.clock
        )
    except AuthenticationError as e:
        on_access(
            store,
            AccessEvent(
                request.app.state.clock.now(),
                store.workspace,
                "request",
                "failed",
                route=_route(request),
                reason=str(e),
            ),
        )
        raise
    request.state.principal = principal
    request.state.auth_store = store
    return principal


def _decide(request: Request, principal: Principal, permission: str | None) -> Principal:
    allowed = permission is None or principal.allows(permission)
    on_access(
        request.state.auth_store,
        AccessEvent(
            request.app.state.clock.now(),
            principal.workspace,
            "request",
            "allowed" if allowed else "denied",
            actor=principal.actor,
            role=principal.role.name,
            route=_route(request),
            permission=permission,
        ),
    )
    if not allowed:
        scoped = " (this API key's scopes)" if principal.scopes is not None else ""
        raise PermissionDenied(
            f"role {principal.role.name}{scoped} does not hold the permission {permission}"
        )
    return principal


class Requires:
    """A dependency: the authenticated caller, whose role must hold `permission` (None: any caller)."""

    def __init__(self, permission: str | None) -> None:
        self.permission = check_permission(permission) if permission is not None else None

    def permission_for(self, path_params: Mapping[str, Any]) -> str | None:
        return self.permission

    def __call__(self, request: Request, principal: Principal = Depends(authenticated)) -> Principal:
        return _decide(request, principal, self.permission)


class RequiresFor(Requires):
    """A permission chosen by a path parameter (e.g. a content action: approve needs content:approve);
    values not in the map need `default`."""

    def __init__(self, param: str, by_value: Mapping[str, str], default: str) -> None:
        super().__init__(default)
        self.param = param
        self.by_value = {v: check_permission(p) for v, p in by_value.items()}

    def permission_for(self, path_params: Mapping[str, Any]) -> str | None:
        return self.by_value.get(str(path_params.get(self.param)), self.permission)

    def __call__(self, request: Request, principal: Principal = Depends(authenticated)) -> Principal:
        return _decide(request, principal, self.permission_for(request.path_params))


class Public:
    """A dependency that checks nothing, declaring why a route needs no authentication."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self) -> None:
        return None


def requires(permission: str) -> Requires:
    return Requires(permission)


def requires_for(param: str, by_value: Mapping[str, str], default: str) -> RequiresFor:
    return RequiresFor(param, by_value, default)


def public(reason: str) -> Public:
    return Public(reason)


signed_in = Requires(None)
