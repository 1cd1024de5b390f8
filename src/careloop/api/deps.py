"""Request dependencies: the backend of the running app and the workspace a request acts in."""

from __future__ import annotations

from fastapi import Header, Request

from careloop.storage import Backend, WorkspaceStore


def backend(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


def store(
    request: Request,
    x_careloop_workspace: str | None = Header(None, description="workspace; default from settings"),
) -> WorkspaceStore:
    b: Backend = request.app.state.backend
    return b.workspace(x_careloop_workspace or request.app.state.settings.workspace, create=False)


def audit_actor(request: Request) -> str:
    """Who a request's audit entries (careloop.privacy.audit) name — decided here and nowhere else: the
    authenticated caller that `careloop.api.security` left on the request (``api:user:NAME``,
    ``api:key:NAME:ID``), else ``api:anonymous``."""
    principal = getattr(request.state, "principal", None)
    actor = getattr(principal, "actor", None)
    return f"api:{actor}" if isinstance(actor, str) and actor else "api:anonymous"


def audit_role(request: Request) -> str | None:
    """The role of the caller named by `audit_actor` (None when unauthenticated)."""
    role = getattr(getattr(request.state, "principal", None), "role", None)
    name = getattr(role, "name", role)
    return name if isinstance(name, str) else None
