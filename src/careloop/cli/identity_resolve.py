"""`careloop identity resolve|merge|split|history|overrides`: unified persons from the store's records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="workspace (default: settings)")


def add_resolve_commands(identity: typer.Typer) -> None:
    """Register the store-level identity commands on the `careloop identity` group."""

    @identity.command("resolve")
    @handle_errors
    def resolve_cmd(
        full: bool = typer.Option(
            False, "--full", help="recompute everything (default: incremental when possible)"
        ),
        threshold: float | None = typer.Option(
            None, "--threshold", help="match probability to join two records"
        ),
        rules: Path | None = typer.Option(
            None, "--rules", help="YAML rules file (default: the packaged rules)"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Link every source's patient records into unified persons (ids stable across runs)."""
        from careloop.events.follow import follow_identity_changes
        from careloop.identity.resolve import resolve
        from careloop.identity.rules import load_rules

        ruleset = load_rules(rules)
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            summary = resolve(store, clock=backend.clock, rules=ruleset, threshold=threshold, full=full)
            events = follow_identity_changes(store, clock=backend.clock)
        if json:
            print_json({**summary.as_dict(), "live_events": events.as_dict()})
            return
        print_table(
            f"identity resolve ({summary.mode}: {summary.mode_reason})",
            ["records", "new", "persons", "created", "merged", "split", "retired", "pairs scored", "seconds"],
            [
                (
                    f"{summary.records:,}",
                    f"{summary.new_records:,}",
                    f"{summary.persons:,}",
                    summary.created,
                    summary.merged,
                    summary.split,
                    summary.retired,
                    f"{summary.pairs_scored:,}",
                    summary.seconds,
                )
            ],
        )
        print_table(
            "links per rule", ["rule", "records"], [(k, f"{v:,}") for k, v in summary.links_by_rule.items()]
        )
        console.print(f"run {summary.run_id}; golden records written: {summary.golden_records}")
        if events.attributed or events.moved or events.released:
            console.print(
                f"live events: {events.attributed:,} attributed, {events.moved} merged persons' events moved, "
                f"{events.released} split persons' events re-attributed"
            )

    @identity.command("merge")
    @handle_errors
    def merge_cmd(
        person_a: str = typer.Argument(..., help="the person that stays"),
        person_b: str = typer.Argument(..., help="the person merged into PERSON_A"),
        reason: str = typer.Option(..., "--reason", help="why (kept in the history)"),
        actor: str = typer.Option("cli", "--actor", help="who decided"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Merge two persons now; every later resolution run keeps them together."""
        from careloop.events.follow import follow_identity_changes
        from careloop.identity import overrides
        from careloop.identity.resolve import rebuild_downstream

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            result = overrides.merge(
                store, person_a, person_b, reason=reason, actor=actor, clock=backend.clock
            )
            rebuild_downstream(store, backend.clock, [person_a, person_b])
            result["live_events"] = follow_identity_changes(store, clock=backend.clock).as_dict()
        _done(result, json, f"merged {person_b} into {person_a}")

    @identity.command("split")
    @handle_errors
    def split_cmd(
        person: str = typer.Argument(..., help="the person to split"),
        records: str = typer.Option(
            ..., "--records", help="SOURCE:KEY[,SOURCE:KEY…] to take out as a new person"
        ),
        reason: str = typer.Option(..., "--reason", help="why (kept in the history)"),
        actor: str = typer.Option("cli", "--actor", help="who decided"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Take records out of a person into a new one; every later run keeps them apart."""
        from careloop.errors import ConfigError
        from careloop.events.follow import follow_identity_changes
        from careloop.identity import overrides
        from careloop.identity.records import parse_record_ref
        from careloop.identity.resolve import rebuild_downstream

        refs = [r.strip() for r in records.split(",") if r.strip()]
        try:
            for r in refs:
                parse_record_ref(r)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            result = overrides.split(store, person, refs, reason=reason, actor=actor, clock=backend.clock)
            rebuild_downstream(store, backend.clock, [person, result["new_person_id"]])
            result["live_events"] = follow_identity_changes(store, clock=backend.clock).as_dict()
        _done(
            result,
            json,
            f"split {result['records_moved']} record(s) of {person} into {result['new_person_id']}",
        )

    @identity.command("history")
    @handle_errors
    def history_cmd(
        person: str = typer.Argument(..., help="a unified person id"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """What happened to a person: created, merged, split (by runs or by hand), with evidence."""
        from careloop.identity import overrides

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            rows = overrides.history(store, person)
            records = _records_or_empty(store, person)
        if json:
            print_json({"person_id": person, "records": records, "history": rows})
            return
        print_table(
            f"history of {person}",
            ["at", "action", "person", "others", "records", "actor", "reason"],
            [
                (r["at"], r["action"], r["person_id"], ", ".join(r["other_person_ids"] or []),
                 len(r["records"] or []), r["actor"], r["reason"])
                for r in rows
            ],
        )  # fmt: skip
        console.print(f"records now: {', '.join(records) if records else 'none'}")

    @identity.command("overrides")
    @handle_errors
    def overrides_cmd(
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """The manual merges and splits every resolution run honours (inactive: lifted by a later merge)."""
        from careloop.identity import overrides

        with open_backend() as backend:
            rows = overrides.list_overrides(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "identity overrides",
            ["id", "action", "record a", "record b", "actor", "reason", "created", "active"],
            [
                (
                    r["id"],
                    r["action"],
                    r["record_a"],
                    r["record_b"],
                    r["actor"],
                    r["reason"],
                    r["created_at"],
                    r["active"],
                )
                for r in rows
            ],
        )


def _records_or_empty(store: Any, person: str) -> list[str]:
    from careloop.errors import NotFoundError
    from careloop.identity import overrides

    try:
        return overrides.person_records(store, person)
    except NotFoundError:
        return []


def _done(result: dict[str, Any], json: bool, message: str) -> None:
    if json:
        print_json(result)
    else:
        console.print(message)
