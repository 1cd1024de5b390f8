"""`careloop consent show|grant|withdraw|refuse|check|import`: the consent ledger (docs/consent.md)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.config import get_settings
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
PersonArg = typer.Argument(..., metavar="PERSON", help="person id, or a record as SOURCE:KEY")
PurposeOpt = typer.Option(
    ...,
    "--purpose",
    "-p",
    help="care_follow_up, service, marketing, research, third_party_sharing or personalisation",
)
ChannelOpt = typer.Option(
    None, "--channel", "-c", help="sms, wechat, app_push, email or phone_call; default: every channel"
)
RecipientOpt = typer.Option(None, "--recipient", help="the named third party (third_party_sharing)")
ProofOpt = typer.Option(None, "--proof", help="a reference to the proof: form id or signature hash")
ByOpt = typer.Option(None, "--by", help="who records it (default: cli:<your user name>)")
SourceOpt = typer.Option(
    "cli", "--source", help="where it was given: wechat_form, app, paper, api, import or cli"
)
AtOpt = typer.Option(None, "--at", help="when (ISO date or time; default now)")
NOT_ALLOWED_EXIT = 3


def parse_when(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date (the start of that day, or with `end_of_day` the end of it) or time, local if naive."""
    if text is None:
        return None
    tz = ZoneInfo(get_settings().timezone)
    t = text.strip()
    try:
        if len(t) <= 10:
            day = date.fromisoformat(t)
            return datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min, tzinfo=tz)
        at = datetime.fromisoformat(t)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a date or time; use 2027-12-31 or 2026-11-01T09:30:00+08:00"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def register(app: typer.Typer) -> None:
    consent = typer.Typer(
        help="The consent ledger: show, grant, withdraw, refuse, check, import (PIPL).", no_args_is_help=True
    )

    def _write(
        action: str,
        person: str,
        purpose: str,
        workspace: str | None,
        json: bool,
        **fields: Any,
    ) -> None:
        from careloop.privacy import consent as ledger
        from careloop.privacy.audit import cli_actor

        fields["recorded_by"] = fields["recorded_by"] or cli_actor()
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace), create=False)
            pid = ledger.resolve_person(store, person)
            rec = ledger.record(store, pid, purpose, action, clock=backend.clock, **fields)
            decision = ledger.may(
                store,
                pid,
                purpose,
                rec.channel,
                at=rec.recorded_at,
                data_category=rec.data_category or "personal",
                recipient=rec.recipient,
            )
        if json:
            print_json({"record": rec.to_dict(), "now": decision.to_dict()})
            return
        what = {"grant": "granted", "withdraw": "withdrew", "refuse": "refused"}[action]
        console.print(
            f"{rec.record_id}: {pid} {what} {purpose}"
            + (f" to {rec.recipient}" if rec.recipient else "")
            + f" ({rec.data_category or 'every category'}, {rec.channel or 'every channel'})"
            + f" — now: {'allowed' if decision.allowed else decision.reason}",
            highlight=False,
        )

    @consent.command("grant")
    @handle_errors
    def grant(
        person: str = PersonArg,
        purpose: str = PurposeOpt,
        channel: str | None = ChannelOpt,
        category: str = typer.Option(
            "health", "--category", help="personal, health, location, financial, biometric or behaviour"
        ),
        recipient: str | None = RecipientOpt,
        notice_version: str | None = typer.Option(None, "--notice-version", help="the notice text shown"),
        guardian: str | None = typer.Option(
            None,
            "--guardian",
            help="given by the child's guardian: parent, mother, father, grandparent, legal_guardian, other",
        ),
        sensitive: bool = typer.Option(
            False, "--sensitive", help="a separate consent for sensitive data (needed for health data)"
        ),
        expires: str | None = typer.Option(
            None, "--expires", help="valid until the end of this date (or time)"
        ),
        proof: str | None = ProofOpt,
        source: str = SourceOpt,
        by: str | None = ByOpt,
        at: str | None = AtOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Record a consent (appended; earlier records stay)."""
        _write(
            "grant",
            person,
            purpose,
            workspace,
            json,
            channel=channel,
            data_category=category,
            recipient=recipient,
            notice_version=notice_version,
            guardian_relation=guardian,
            sensitive=sensitive,
            expires_at=parse_when(expires, end_of_day=True),
            proof=proof,
            source=source,
            recorded_by=by,
            effective_at=parse_when(at),
        )

    @consent.command("withdraw")
    @handle_errors
    def withdraw(
        person: str = PersonArg,
        purpose: str = PurposeOpt,
        channel: str | None = ChannelOpt,
        category: str | None = typer.Option(None, "--category", help="default: every data category"),
        recipient: str | None = RecipientOpt,
        proof: str | None = ProofOpt,
        source: str = SourceOpt,
        by: str | None = ByOpt,
        at: str | None = AtOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Withdraw a consent: of every channel and category of the purpose unless named."""
        _write(
            "withdraw",
            person,
            purpose,
            workspace,
            json,
            channel=channel,
            data_category=category,
            recipient=recipient,
            proof=proof,
            source=source,
            recorded_by=by,
            effective_at=parse_when(at),
        )

    @consent.command("refuse")
    @handle_errors
    def refuse(
        person: str = PersonArg,
        purpose: str = PurposeOpt,
        channel: str | None = ChannelOpt,
        category: str | None = typer.Option(None, "--category", help="default: every data category"),
        recipient: str | None = RecipientOpt,
        notice_version: str | None = typer.Option(None, "--notice-version", help="the notice text shown"),
        proof: str | None = ProofOpt,
        source: str = SourceOpt,
        by: str | None = ByOpt,
        at: str | None = AtOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Record that the person was asked and said no."""
        _write(
            "refuse",
            person,
            purpose,
            workspace,
            json,
            channel=channel,
            data_category=category,
            recipient=recipient,
            notice_version=notice_version,
            proof=proof,
            source=source,
            recorded_by=by,
            effective_at=parse_when(at),
        )

    @consent.command("check")
    @handle_errors
    def check(
        person: str = PersonArg,
        purpose: str = PurposeOpt,
        channel: str | None = typer.Option(
            None, "--channel", "-c", help="the channel; default: processing that uses no channel"
        ),
        category: str = typer.Option("health", "--category", help="the data category processed"),
        recipient: str | None = RecipientOpt,
        at: str | None = AtOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """May we? The answer, the reason and the deciding record. Exits 0 when allowed, 3 when not."""
        from careloop.privacy import consent as ledger

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace), create=False)
            pid = ledger.resolve_person(store, person)
            d = ledger.may(
                store,
                pid,
                purpose,
                channel,
                at=parse_when(at) or backend.clock.now(),
                data_category=category,
                recipient=recipient,
            )
        if json:
            print_json(d.to_dict())
        else:
            console.print(
                f"{pid} {purpose} via {channel or 'no channel'} ({category}): "
                + ("[green]allowed[/]" if d.allowed else f"[red]no[/] — {d.reason}")
                + (f" (record {d.record_id})" if d.record_id else ""),
                highlight=False,
            )
        if not d.allowed:
            raise typer.Exit(NOT_ALLOWED_EXIT)

    @consent.command("show")
    @handle_errors
    def show(
        person: str = PersonArg,
        at: str | None = AtOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """The current answer per purpose x category x channel (with the deciding record) and the history."""
        from careloop.privacy import consent as ledger

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace), create=False)
            pid = ledger.resolve_person(store, person)
            when = parse_when(at) or backend.clock.now()
            current = ledger.state(store, pid, at=when)
            records = ledger.history(store, pid, at=when)
            young = ledger.under_14(store, pid, at=when)
            off = ledger.personalisation_off(store, pid, at=when)
        if json:
            print_json(
                {
                    "person_id": pid,
                    "at": when,
                    "under_14": young,
                    "personalisation_off": off,
                    "state": [d.to_dict() for d in current],
                    "history": [r.to_dict() for r in records],
                }
            )
            return
        tz = ZoneInfo(get_settings().timezone)

        def local(at: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
            return at.astimezone(tz).strftime(fmt) if at is not None else ""

        console.print(
            f"[bold]consents of {pid}[/] at {local(when)} ({tz.key})"
            + (" — [yellow]under 14: a guardian's consent is needed[/]" if young else "")
            + (" — personalisation switched off (PIPL Art 24)" if off else ""),
            highlight=False,
        )
        print_table(
            "now",
            ["purpose", "recipient", "category", "channel", "answer", "deciding record", "since", "expires"],
            [
                [
                    d.purpose,
                    d.record.recipient if d.record else "",
                    d.data_category,
                    d.channel or "every",
                    "allowed" if d.allowed else d.reason,
                    d.record_id,
                    local(d.record.effective_at) if d.record else "",
                    local(d.record.expires_at) if d.record else "",
                ]
                for d in current
            ],
        )
        print_table(
            f"history ({len(records)} records, oldest first)",
            [
                "record",
                "at",
                "action",
                "purpose",
                "category",
                "channel",
                "flags",
                "source",
                "notice",
                "proof",
            ],
            [
                [
                    r.record_id + (f" (via {r.origin})" if r.origin and r.source != ledger.INGESTED else ""),
                    local(r.effective_at),
                    r.action,
                    r.purpose + (f" → {r.recipient}" if r.recipient else ""),
                    r.data_category or "every",
                    r.channel or "every",
                    ", ".join(
                        f
                        for f in (
                            "separate" if r.sensitive else "",
                            f"guardian: {r.guardian_relation or '?'}" if r.by_guardian else "",
                        )
                        if f
                    ),
                    r.source,
                    r.notice_version,
                    r.proof,
                ]
                for r in records
            ],
        )

    @consent.command("import")
    @handle_errors
    def import_(
        file: Path = typer.Argument(..., help="a CSV file with a header row (UTF-8)"),
        mapping: Path | None = typer.Option(
            None, "--mapping", "-m", help="YAML: columns, values and defaults (docs/consent.md)"
        ),
        source: str = typer.Option(
            "import", "--source", help="where the records were given, unless a column says: paper, app, ..."
        ),
        by: str | None = typer.Option(None, "--by", help="who imports them (default: cli:<your user name>)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Append a file's consent records, once each; bad rows are quarantined with the reason."""
        from careloop.privacy import consent as ledger
        from careloop.privacy.audit import cli_actor

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace), create=False)
            summary = ledger.import_records(
                store,
                file,
                mapping=mapping,
                source=source,
                recorded_by=by or cli_actor(),
                clock=backend.clock,
            )
        if json:
            print_json(summary.to_dict())
            return
        console.print(
            f"run {summary.run_id}: {summary.read} rows read, {summary.recorded} recorded, "
            f"{summary.duplicates} already in the ledger, {len(summary.rejected)} quarantined",
            highlight=False,
        )
        if summary.rejected:
            print_table(
                f"quarantined (see `careloop quarantine list --run {summary.run_id}`)",
                ["line", "field", "reason"],
                [[r.line, r.field, r.reason] for r in summary.rejected[:50]],
            )

    app.add_typer(consent, name="consent")
