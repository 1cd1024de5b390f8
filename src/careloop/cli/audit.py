"""`careloop audit verify|show|checkpoint`: the tamper-evident audit chain of each workspace."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import typer

from careloop.cli._common import JsonOpt, console, err_console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.config import get_settings
from careloop.errors import ConfigError

audit_app = typer.Typer(
    help="The audit chain: verify it, list entries, sign a checkpoint.", no_args_is_help=True
)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="workspace (default CARELOOP_WORKSPACE)")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give a date or time like 2026-11-01 or 2026-11-01T09:30"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(get_settings().timezone))


def _entries(n: int) -> str:
    return f"{n:,} entr{'y' if n == 1 else 'ies'}"


@audit_app.command("verify")
@handle_errors
def verify_cmd(
    workspace: str | None = WorkspaceOpt,
    all_workspaces: bool = typer.Option(False, "--all-workspaces", help="verify every workspace's chain"),
    json: bool = JsonOpt,
) -> None:
    """Recompute every hash and checkpoint signature; report the first broken entry (exit 1 if any)."""
    from careloop.privacy.audit import ChainSigner, verify

    signer = ChainSigner.from_settings()
    with open_backend() as backend:
        names = backend.workspaces() if all_workspaces else [workspace_name(workspace)]
        reports = [verify(backend.workspace(ws, create=False), signer=signer) for ws in names]
    broken = [r for r in reports if not r.ok]
    if json:
        print_json(
            {"ok": not broken, "workspaces": [r.as_dict() for r in reports]}
            if all_workspaces
            else reports[0].as_dict()
        )
    else:
        for r in reports:
            cps = f"{r.checkpoints:,} checkpoint(s)" + (
                f", the last at {r.last_checkpoint:,}" if r.last_checkpoint else ""
            )
            console.print(
                f"audit chain of workspace {r.workspace}: {_entries(r.entries)}, {cps}; "
                f"{_entries(r.unsigned_tail)} after the last checkpoint",
                highlight=False,
            )
            if r.ok:
                console.print(
                    "[green]OK[/] — every entry chains to the one before it and every checkpoint "
                    "signature is valid",
                    highlight=False,
                )
                continue
            first = r.problems[0]
            err_console.print(f"[bold red]BROKEN[/] — {first.message}", highlight=False)
            for p in r.problems[1:10]:
                err_console.print(f"  also: {p.message}", highlight=False)
            total = len(r.problems) + r.more_problems
            if total > 10:
                err_console.print(f"  … and {total - 10:,} more (see --json)", highlight=False)
    if broken:
        raise typer.Exit(1)


@audit_app.command("show")
@handle_errors
def show(
    actor: str | None = typer.Option(
        None, "--actor", help="only this actor, e.g. cli:alice or api:anonymous"
    ),
    action: str | None = typer.Option(
        None, "--action", help="only this action; a trailing * matches a prefix (dsr.*, read*)"
    ),
    target: str | None = typer.Option(
        None, "--target", help="only this target id (a person id, a key id, ...)"
    ),
    since: str | None = typer.Option(None, "--since", help="from this date or time (local time if no zone)"),
    limit: int = typer.Option(50, "--limit", min=1, help="most recent entries to show"),
    workspace: str | None = WorkspaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Audit entries, newest first (targets are person ids and references; details hold no identifiers)."""
    from careloop.privacy.audit import entries

    with open_backend() as backend:
        rows = entries(
            backend.workspace(workspace_name(workspace), create=False),
            actor=actor,
            action=action,
            target=target,
            since=_since(since),
            limit=limit,
        )
    if json:
        print_json([e.as_dict() for e in rows])
        return
    print_table(
        f"{_entries(len(rows))} of the audit chain, newest first",
        ["seq", "at", "actor", "role", "action", "target", "purpose", "detail"],
        [
            [
                f"{e.seq:,}",
                e.at.isoformat(timespec="seconds"),
                e.actor,
                e.role,
                e.action,
                f"{e.target_kind}:{e.target_id}" if e.target_id else e.target_kind,
                e.purpose,
                orjson.dumps(orjson.loads(e.detail)).decode() if e.detail else None,
            ]
            for e in rows
        ],
    )


@audit_app.command("checkpoint")
@handle_errors
def checkpoint(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
    """Sign the chain's head now (also done every 1,000 entries). Keep the printed line somewhere else too
    (a ticket, a WORM bucket): a copy outside the database anchors the chain even against a stolen key."""
    from careloop.privacy.audit import AuditEvent, audit_log, cli_actor

    with open_backend() as backend:
        log = audit_log(backend.workspace(workspace_name(workspace), create=False))
        cp = log.checkpoint()
        if cp is not None:
            log.append(
                AuditEvent(
                    actor=cli_actor(),
                    action="audit.checkpoint",
                    target_kind="checkpoint",
                    target_id=str(cp.seq),
                )
            )
    if json:
        print_json(cp.as_dict() if cp else None)
        return
    if cp is None:
        console.print("the audit chain is empty: nothing to sign")
        return
    console.print(
        f"checkpoint at {cp.seq:,} of workspace {cp.workspace}: hash {cp.hash} signature {cp.signature} "
        f"(key {cp.key_id}, {cp.at.isoformat(timespec='seconds')})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
