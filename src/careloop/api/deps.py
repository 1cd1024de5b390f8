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


def audit_read(
    request: Request,
    s: WorkspaceStore,
    what: str,
    *,
    person_id: str | None = None,
    target_kind: str = "person",
    target_id: str | None = None,
    rows: int | None = None,
) -> None:
    """Record an API read of person-level data: one person's `what` (traits, tags, consents, …) as
    `read.patient`, or a list of persons (segment members, look-alikes, tasks) as `read.list` with its
    row count — never the values themselves."""
    from careloop.privacy.audit import audit_event

    detail: dict[str, object] = {"via": "api", "what": what}
    if rows is not None:
        detail["rows"] = rows
    audit_event(
        s,
        actor=audit_actor(request),
        role=audit_role(request),
        action="read.patient" if person_id is not None else "read.list",
        target_kind="person" if person_id is not None else target_kind,
        target_id=person_id if person_id is not None else target_id,
        detail=detail,
    )
