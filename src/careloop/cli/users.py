"""`careloop user` (console users and their roles) and `careloop apikey` (keys for machines)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, time, timedelta
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError
from careloop.storage import WorkspaceStore

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
RoleOpt = typer.Option(
    ..., "--role", "-r", help="admin, dpo, marketer, analyst, medical_rep, reviewer or engineer"
)
_SPAN = re.compile(r"^(\d+)([dhm])$")


def read_password(from_stdin: bool) -> str:
    """The password from the first line of standard input, or asked for twice without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ConfigError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    entered: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return entered


def parse_expiry(text: str | None, now: datetime) -> datetime | None:
    """``90d``, ``12h``, ``30m`` from now, or an ISO date (end of that day, UTC) or date-time."""
    if text is None:
        return None
    m = _SPAN.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now + {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]
    try:
        if len(text) == 10:
            return datetime.combine(datetime.fromisoformat(text).date(), time(23, 59, 59), UTC)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--expires {text!r}: use 90d, 12h, 30m, a date (2027-01-31) or a date-time"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def audit_change(store: WorkspaceStore, action: str, kind: str, target: str, **detail: Any) -> None:
    """The change on the audit chain, as the operating-system user who ran the command."""
    from careloop.privacy.audit import cli_actor
    from careloop.privacy.auth import audit_admin

    audit_admin(store, action, actor=cli_actor(), target_kind=kind, target_id=target, **detail)


def register(app: typer.Typer) -> None:
    user = typer.Typer(help="Console users: sign-in names, roles, passwords.", no_args_is_help=True)
    apikey = typer.Typer(help="API keys for machines (shown once, stored hashed).", no_args_is_help=True)

    @user.command("add")
    @handle_errors
    def add(
        name: str = typer.Argument(..., help="user name: lowercase letters, digits, '.', '_', '@', '-'"),
        role: str = RoleOpt,
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="read the password from standard input instead of asking"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Add a user who signs in to the console (POST /v1/auth/login) with a password."""
        from careloop.privacy.auth import add_user
        from careloop.privacy.roles import get_role

        get_role(role)
        password = read_password(password_stdin)
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            out = add_user(store, name, password, role, clock=backend.clock)
            audit_change(store, "user.add", "user", name, role=role)
        if json:
            print_json(out)
            return
        console.print(f"user [bold]{name}[/] added with role {role}")

    @user.command("list")
    @handle_errors
    def list_(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Users with their role, status and last sign-in (never a password hash)."""
        from careloop.privacy.auth import list_users

        with open_backend() as backend:
            rows = list_users(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "users",
            ["user", "role", "status", "created", "last sign-in"],
            [
                (
                    r["username"],
                    r["role"],
                    "disabled" if r["disabled"] else "active",
                    r["created_at"],
                    r["last_login_at"],
                )
                for r in rows
            ],
        )

    @user.command("disable")
    @handle_errors
    def disable(name: str = typer.Argument(...), workspace: str | None = WorkspaceOpt) -> None:
        """Refuse the user's sign-ins and tokens from now on."""
        from careloop.privacy.auth import set_disabled

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            set_disabled(store, name, True, clock=backend.clock)
            audit_change(store, "user.disable", "user", name)
        console.print(f"user {name} disabled; `careloop user enable {name}` undoes it")

    @user.command("enable")
    @handle_errors
    def enable(name: str = typer.Argument(...), workspace: str | None = WorkspaceOpt) -> None:
        """Let a disabled user sign in again."""
        from careloop.privacy.auth import set_disabled

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            set_disabled(store, name, False, clock=backend.clock)
            audit_change(store, "user.enable", "user", name)
        console.print(f"user {name} enabled")

    @user.command("set-role")
    @handle_errors
    def set_role_(
        name: str = typer.Argument(...),
        role: str = typer.Argument(..., help="the new role"),
        workspace: str | None = WorkspaceOpt,
    ) -> None:
        """Give a user another role (the user's tokens stop working: sign in again)."""
        from careloop.privacy.auth import set_role

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            set_role(store, name, role, clock=backend.clock)
            audit_change(store, "user.set_role", "user", name, role=role)
        console.print(f"user {name} now has role {role}")

    @user.command("set-password")
    @handle_errors
    def set_password_(
        name: str = typer.Argument(...),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="read it from standard input"),
        workspace: str | None = WorkspaceOpt,
    ) -> None:
        """Set a user's password (the user's tokens stop working)."""
        from careloop.privacy.auth import set_password

        password = read_password(password_stdin)
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            set_password(store, name, password, clock=backend.clock)
            audit_change(store, "user.set_password", "user", name)
        console.print(f"password of {name} changed")

    @user.command("roles")
    @handle_errors
    def roles(json: bool = JsonOpt) -> None:
        """Every role with its permissions and what it sees of a patient."""
        from careloop.privacy.roles import ROLES

        rows: list[dict[str, Any]] = [
            {
                "role": r.name,
                "description": r.description,
                "permissions": sorted(r.permissions),
                "identifiers": r.viewer.default.value,
                "hidden": sorted(k for k, v in r.viewer.kinds.items() if v.value == "hidden"),
                "sections": sorted(r.viewer.sections),
                "record_references": r.viewer.records,
            }
            for r in ROLES.values()
        ]
        if json:
            print_json(rows)
            return
        print_table(
            "roles",
            ["role", "permissions", "identifiers", "also hidden"],
            [
                (r["role"], ", ".join(r["permissions"]), r["identifiers"], ", ".join(r["hidden"]))
                for r in rows
            ],
        )

    @apikey.command("create")
    @handle_errors
    def create(
        name: str = typer.Argument(..., help="what the key is for, e.g. ingest-bot"),
        role: str = RoleOpt,
        scope: list[str] | None = typer.Option(
            None,
            "--scope",
            help="narrow the key to this permission of its role (repeatable; e.g. journeys:enter)",
        ),
        expires: str | None = typer.Option(None, "--expires", help="90d, 12h, 30m, a date or a date-time"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Create an API key and print it (shown once: careloop keeps only its hash)."""
        from careloop.privacy.auth import create_api_key

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            listing, key = create_api_key(
                store,
                name,
                role,
                scopes=scope or None,
                expires_at=parse_expiry(expires, backend.clock.now()),
                created_by="cli",
                clock=backend.clock,
            )
            audit_change(store, "apikey.create", "api_key", listing["key_id"], key_name=name, role=role)
        if json:
            print_json({**listing, "api_key": key})
            return
        console.print(f"API key [bold]{name}[/] (id {listing['key_id']}, role {role}) created")
        console.print(f"key: [bold]{key}[/]  (shown once; careloop keeps only its hash)", highlight=False)
        console.print("send it as: Authorization: Bearer KEY", highlight=False)

    @apikey.command("list")
    @handle_errors
    def list_keys(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """API keys with role, scopes, expiry and status (keys are never shown again)."""
        from careloop.privacy.auth import list_api_keys

        with open_backend() as backend:
            rows = list_api_keys(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "API keys",
            ["id", "name", "role", "scopes", "expires", "status", "last used"],
            [
                (
                    r["key_id"],
                    r["name"],
                    r["role"],
                    ", ".join(r["scopes"]) if r["scopes"] is not None else "(role)",
                    r["expires_at"],
                    "revoked" if r["revoked_at"] is not None else "active",
                    r["last_used_at"],
                )
                for r in rows
            ],
        )

    @apikey.command("revoke")
    @handle_errors
    def revoke(
        name: str = typer.Argument(..., help="the key's name or id"), workspace: str | None = WorkspaceOpt
    ) -> None:
        """Revoke a key: its requests get 401 from now on."""
        from careloop.privacy.auth import revoke_api_key

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            ids = revoke_api_key(store, name, clock=backend.clock)
            for key_id in ids:
                audit_change(store, "apikey.revoke", "api_key", key_id)
        console.print(f"revoked API key(s) {', '.join(ids)}")

    app.add_typer(user, name="user")
    app.add_typer(apikey, name="apikey")
