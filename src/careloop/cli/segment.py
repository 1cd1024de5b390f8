"""`careloop segment`: audiences over traits, events and other segments — create, count, explain, export."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import typer
import yaml

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, require_person, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
AsOfOpt = typer.Option(None, "--as-of", help="the day windows and relative dates count from (default: today)")


def _definition(text: str) -> Any:
    """A definition from a .json / .yaml file, or inline JSON / YAML."""
    path = Path(text)
    raw = (
        path.read_text(encoding="utf-8")
        if path.suffix in (".json", ".yaml", ".yml") and path.exists()
        else text
    )
    try:
        return yaml.safe_load(raw)  # JSON is YAML
    except yaml.YAMLError as e:
        raise ConfigError(f"the segment definition is neither JSON nor YAML: {e}") from e


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise ConfigError(f"--as-of must be a date like 2026-10-31, not {text!r}") from None


def register(app: typer.Typer) -> None:
    seg = typer.Typer(
        help="Segments: audiences defined by conditions (docs/segments.md).", no_args_is_help=True
    )

    @seg.command("create")
    @handle_errors
    def create(
        name: str = typer.Argument(..., help="segment name"),
        definition: str = typer.Argument(..., help="a .json / .yaml file, or the definition inline"),
        description: str = typer.Option("", "--description"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Create a segment (or a new version when the definition changed); `refresh` fills its members."""
        from careloop.profiles.segments import save_segment

        with open_backend() as backend:
            s = save_segment(
                backend.workspace(workspace_name(workspace)),
                name,
                _definition(definition),
                description,
                clock=backend.clock,
            )
        if json:
            print_json({"name": s.name, "version": s.version, "definition": s.definition})
            return
        console.print(
            f"segment {s.name} version {s.version}; `careloop segment refresh {s.name}` fills its members"
        )

    @seg.command("list")
    @handle_errors
    def list_(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Segments with their version and stored member count."""
        from careloop.profiles.segments import list_segments

        with open_backend() as backend:
            rows = list_segments(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "segments",
            ["segment", "version", "members", "description"],
            [(r["name"], r["version"], f"{r['members']:,}", r["description"]) for r in rows],
        )

    @seg.command("preview")
    @handle_errors
    def preview(
        definition: str = typer.Argument(..., help="a .json / .yaml file, or the definition inline"),
        as_of: str | None = AsOfOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Count and sample the persons a definition holds for, without saving anything."""
        from careloop.profiles.segments import members

        with open_backend() as backend:
            found = members(
                backend.workspace(workspace_name(workspace)),
                _definition(definition),
                as_of=_day(as_of),
                clock=backend.clock,
            )
        out = {"count": len(found), "sample": found[:10]}
        if json:
            print_json(out)
            return
        console.print(f"{len(found):,} persons; e.g. {', '.join(found[:10])}")

    @seg.command("count")
    @handle_errors
    def count_(
        name: str = typer.Argument(...),
        as_of: str | None = AsOfOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """How many persons a saved segment holds for now (evaluated, not the stored members)."""
        from careloop.profiles.segments import count, get_segment

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            n = count(store, get_segment(store, name).definition, as_of=_day(as_of), clock=backend.clock)
        if json:
            print_json({"segment": name, "count": n})
            return
        console.print(f"{name}: {n:,} persons")

    @seg.command("refresh")
    @handle_errors
    def refresh_(
        names: list[str] | None = typer.Argument(None, help="segments to refresh (or --all)"),
        all_: bool = typer.Option(False, "--all", help="every segment, referenced ones first"),
        as_of: str | None = AsOfOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Re-evaluate segments over everyone and store their members (reports who entered and left)."""
        from careloop.profiles.segments import refresh_all

        if not names and not all_:
            raise ConfigError("name the segments to refresh, or pass --all")
        with open_backend() as backend:
            out = refresh_all(
                backend.workspace(workspace_name(workspace)),
                None if all_ else names,
                as_of=_day(as_of),
                clock=backend.clock,
            )
        if json:
            print_json([{"segment": n, **o} for n, o in out.items()])
            return
        for n, o in out.items():
            console.print(f"{n}: {o['members']:,} members ({o['entered']:,} entered, {o['left']:,} left)")

    @seg.command("members")
    @handle_errors
    def members_(
        name: str = typer.Argument(...),
        limit: int = typer.Option(50, "--limit"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """The stored members of a segment (as of its last refresh); --limit 0 for all."""
        from careloop.profiles.segments import stored_members

        with open_backend() as backend:
            total, rows = stored_members(
                backend.workspace(workspace_name(workspace)), name, limit=limit or None
            )
        if json:
            print_json(rows)
            return
        print_table(
            f"{name}: {total:,} members",
            ["person", "version", "entered"],
            [(r["person_id"], r["version"], r["entered_at"]) for r in rows],
        )

    @seg.command("explain")
    @handle_errors
    def explain_(
        name: str = typer.Argument(...),
        person: str = typer.Argument(...),
        as_of: str | None = AsOfOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Condition by condition, why a person is in or out of a segment."""
        from careloop.profiles.segments import explain, get_segment

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            require_person(store, person)
            out = explain(
                store, get_segment(store, name).definition, person, as_of=_day(as_of), clock=backend.clock
            )
        if json:
            print_json(out)
            return
        console.print(f"{person} is {'IN' if out['in'] else 'OUT of'} {name} (as of {out['as_of']})")
        _print_verdict(out["because"], 1)

    @seg.command("export")
    @handle_errors
    def export(
        name: str = typer.Argument(...),
        output: Path = typer.Option(..., "--output", "-o"),
        purpose: str | None = typer.Option(
            None, "--purpose", help="why the list leaves careloop (recorded in the audit chain)"
        ),
        workspace: str | None = WorkspaceOpt,
    ) -> None:
        """Write a segment's stored members to CSV (person ids only: identifiers stay in careloop)."""
        from careloop.privacy.audit import audit_event, cli_actor
        from careloop.privacy.export import check_purpose
        from careloop.profiles.segments import stored_members

        purpose = check_purpose(purpose)  # person-level: required (docs/data-subject-rights.md#safe-export)
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            _, rows = stored_members(store, name)
            with output.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["person_id", "segment", "version", "entered_at"])
                w.writerows([(r["person_id"], name, r["version"], r["entered_at"]) for r in rows])
            audit_event(
                store,
                actor=cli_actor(),
                action="export",
                target_kind="segment",
                target_id=name,
                purpose=purpose,
                detail={
                    "rows": len(rows),
                    "format": "csv",
                    "columns": ["person_id", "segment", "version", "entered_at"],
                },
            )
        console.print(f"{len(rows):,} members of {name} written to {output}")

    app.add_typer(seg, name="segment")


def _print_verdict(v: dict[str, Any], depth: int) -> None:
    mark = "[green]✓[/]" if v["holds"] else "[red]✗[/]"
    seen = "" if "because" in v else f"  (seen: {orjson.dumps(v.get('seen'), default=str).decode()})"
    console.print(f"{'  ' * depth}{mark} {v['condition']}{seen}", highlight=False)
    for child in v.get("because", []):
        _print_verdict(child, depth + 1)
