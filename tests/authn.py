"""Signing test clients in: an API key of a role in a workspace, as request headers."""

from __future__ import annotations

import secrets

from careloop.privacy.auth import create_api_key
from careloop.storage import Backend


def key_headers(backend: Backend, role: str = "admin", workspace: str = "default") -> dict[str, str]:
    """Authorization headers with a new API key of `role` in `workspace` (created if missing)."""
    _, key = create_api_key(
        backend.workspace(workspace), f"test-{role.replace('_', '-')}-{secrets.token_hex(3)}", role
    )
    return {"Authorization": f"Bearer {key}"}
