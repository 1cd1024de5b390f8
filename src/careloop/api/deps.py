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
