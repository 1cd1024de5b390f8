"""`careloop dsr`: data-subject requests (PIPL Art 44-47) — register, deadlines, access, correction, erasure."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError

if TYPE_CHECKING:
    from careloop.privacy.fields import FieldCipher

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")


def _cipher() -> FieldCipher:
    from careloop.config import get_settings
    from careloop.privacy.fields import FieldCipher
    from careloop.privacy.keys import load_keyring

    s = get_settings()
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


def _actor() -> str:
    from careloop.privacy.audit import cli_actor

    return cli_actor()


def register(app: typer.Typer) -> None:
    d = typer.Typer(
        help="Data-subject requests: access / copy, correction, deletion, with deadlines (docs/data-subject-rights.md).",
        no_args_is_help=True,
    )

    @d.command("open")
    @handle_errors
    def open_(
        person: str = typer.Argument(..., help="the unified person id (verify the requester first)"),
        kind: str = typer.Option(..., "--kind", help="access | copy | correction | deletion"),
        received: str | None = typer.Option(
            None, "--received", help="when the request arrived (ISO time with zone; default: now)"
        ),
        note: str | None = typer.Option(None, "--note", help="how it arrived, how identity was checked"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Register a request; it is due CARELOOP_DSR_DUE_DAYS (15) days after receipt."""
        from careloop.privacy.dsr import open_request

        at = None
        if received:
            try:
                at = datetime.fromisoformat(received)
            except ValueError:
                raise ConfigError(
                    f"--received must be an ISO time like 2026-11-01T09:00+08:00, not {received!r}"
                ) from None
        with open_backend() as backend:
            req = open_request(
                backend.workspace(workspace_name(workspace)),
                person,
                kind,
                received_at=at,
                note=note,
                actor=_actor(),
            )
        if json:
            print_json(req.as_dict())
            return
        console.print(f"request {req.request_id} ({kind}) opened; due {req.due_at:%Y-%m-%d %H:%M %Z}")

    @d.command("list")
    @handle_errors
    def list_(
        overdue: bool = typer.Option(False, "--overdue", help="only open requests past their due time"),
        status: str | None = typer.Option(None, "--status", help="open | done | closed | rejected"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """The register, due first (the deadline tracker)."""
        from careloop.clock import SYSTEM_CLOCK
        from careloop.privacy.dsr import list_requests

        now = SYSTEM_CLOCK.now()
        with open_backend() as backend:
            reqs = list_requests(backend.workspace(workspace_name(workspace)), status=status, overdue=overdue)
        if json:
            print_json([r.as_dict(now) for r in reqs])
            return
        print_table(
            "data-subject requests",
            ["request", "person", "kind", "received", "due", "status", "days left"],
            [
                (
                    r.request_id,
                    r.person_id,
                    r.kind,
                    f"{r.received_at:%Y-%m-%d}",
                    f"{r.due_at:%Y-%m-%d}",
                    ("OVERDUE" if r.overdue(now) else r.status),
                    (r.due_at - now).days if r.status == "open" else "",
                )
                for r in reqs
            ],
        )

    @d.command("show")
    @handle_errors
    def show(request_id: str = typer.Argument(...), workspace: str | None = WorkspaceOpt) -> None:
        """One request with its notes, result and deletion certificate (JSON)."""
        from careloop.clock import SYSTEM_CLOCK
        from careloop.privacy.dsr import get_request

        with open_backend() as backend:
            req = get_request(backend.workspace(workspace_name(workspace)), request_id)
        print_json(req.as_dict(SYSTEM_CLOCK.now()))

    @d.command("access")
    @handle_errors
    def access(
        request_id: str = typer.Argument(...),
        output: Path = typer.Option(
            ..., "--output", "-o", help="a .json file, or .zip (one file per table too)"
        ),
        purpose: str = typer.Option(
            "data_subject_request", "--purpose", help="recorded in the audit log with the export"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Carry out an access / copy request: everything about the person, decrypted, machine-readable."""
        from careloop.privacy.dsr import access as do_access

        with open_backend() as backend:
            result = do_access(
                backend.workspace(workspace_name(workspace)),
                request_id,
                output,
                purpose=purpose,
                cipher=_cipher(),
                actor=_actor(),
            )
        if json:
            print_json(result)
            return
        console.print(
            f"{result['rows']:,} rows from {len(result['tables'])} tables written to {output} "
            f"(sha256 {result['sha256'][:16]}…); hand it to the person over a secure channel"
        )

    @d.command("correct")
    @handle_errors
    def correct(
        request_id: str = typer.Argument(...),
        field: str = typer.Option(
            ..., "--field", help="name, phone, id_number, address, sex, birth_date, ..."
        ),
        value: str = typer.Option(..., "--value", help="the corrected value (never logged)"),
        reason: str = typer.Option(..., "--reason", help="why (kept in identity history and the register)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Carry out a correction request on the golden record (re-encrypted and re-indexed)."""
        from careloop.privacy.dsr import correct as do_correct

        with open_backend() as backend:
            out = do_correct(
                backend.workspace(workspace_name(workspace)),
                request_id,
                field,
                value,
                reason=reason,
                cipher=_cipher(),
                actor=_actor(),
            )
        if json:
            print_json(out)
            return
        console.print(f"{field} corrected on the golden record and {out['source_records']} source record(s)")

    @d.command("erase")
    @handle_errors
    def erase(
        request_id: str = typer.Argument(...),
        yes: bool = typer.Option(False, "--yes", help="confirm: the person's data is deleted for good"),
        output: Path | None = typer.Option(None, "--certificate", help="also write the certificate here"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Carry out a deletion request: delete everywhere, keep suppression hashes, issue a certificate."""
        import orjson

        from careloop.privacy.dsr import erase as do_erase

        if not yes:
            raise ConfigError("erasure cannot be undone: run again with --yes")
        with open_backend() as backend:
            cert = do_erase(
                backend.workspace(workspace_name(workspace)), request_id, cipher=_cipher(), actor=_actor()
            )
        if output:
            output.write_bytes(orjson.dumps(cert, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        if json:
            print_json(cert)
            return
        console.print(
            f"erased person {cert['person_id']}: {cert['rows_deleted']:,} rows in "
            f"{sum(1 for n in cert['tables'].values() if n)} tables; certificate sha256 {cert['sha256']}"
        )
        if cert["models_flagged_for_retraining"]:
            console.print(f"models to retrain: {', '.join(cert['models_flagged_for_retraining'])}")

    @d.command("close")
    @handle_errors
    def close(
        request_id: str = typer.Argument(...),
        note: str | None = typer.Option(None, "--note"),
        reject: bool = typer.Option(False, "--reject", help="reject (a --note with the reason is required)"),
        workspace: str | None = WorkspaceOpt,
    ) -> None:
        """Close a carried-out request (the person was answered), or reject one with the reason."""
        from careloop.privacy.dsr import close_request

        with open_backend() as backend:
            req = close_request(
                backend.workspace(workspace_name(workspace)),
                request_id,
                note=note,
                reject=reject,
                actor=_actor(),
            )
        console.print(f"request {req.request_id} {req.status}")

    app.add_typer(d, name="dsr")
