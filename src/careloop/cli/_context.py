"""Opening the configured store for a command."""

from __future__ import annotations

from careloop.config import get_settings
from careloop.errors import NotFoundError
from careloop.storage import Backend, WorkspaceStore, connect


def open_backend(database_url: str | None = None) -> Backend:
    return connect(database_url or get_settings().database_url)


def workspace_name(workspace: str | None) -> str:
    return workspace or get_settings().workspace


def require_person(store: WorkspaceStore, person: str) -> None:
    """Raise NotFoundError (with how to find one) unless `person` is a unified person id."""
    if not store.scalar("SELECT count(*) FROM person WHERE person_id = :p", {"p": person}):
        raise NotFoundError(f"no person {person!r}; find one with `careloop patient find --phone ...`")
