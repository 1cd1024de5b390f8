"""Opening the configured store for a command."""

from __future__ import annotations

from careloop.config import get_settings
from careloop.storage import Backend, connect


def open_backend(database_url: str | None = None) -> Backend:
    return connect(database_url or get_settings().database_url)


def workspace_name(workspace: str | None) -> str:
    return workspace or get_settings().workspace
