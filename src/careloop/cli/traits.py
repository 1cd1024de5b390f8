"""`careloop traits`: compute, list and show the traits that describe each unified patient."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, require_person, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
DefsOpt = typer.Option(
    None, "--definitions", help="trait definitions YAML (default: careloop's, see docs/traits.md)"
)


def register(app: typer.Typer) -> None:
    traits = typer.Typer(help="Traits of each unified patient (declared in YAML).", no_args_is_help=True)

    @traits.command("list")
    @handle_errors
    def list_(definitions: Path | None = DefsOpt, json: bool = JsonOpt) -> None:
        """The trait definitions: what each trait means and how it is computed."""
        from dataclasses import asdict

        from careloop.profiles.traits import load_traits

        ts = load_traits(definitions)
        rows = [asdict(d) for d in ts.traits.values()]
        if json:
            print_json({"version": ts.version, "traits": rows})
            return
        print_table(
            f"traits (definitions version {ts.version})",
            ["trait", "computed as", "window", "history", "description"],
            [
                (
                    d["name"],
                    d["builtin"]
                    or f"{d['aggregate']}({d['of'] or '*'}) of {d['source']}"
                    + (f" where {d['where']}" if d["where"] else ""),
                    f"{d['window_days']} d" if d["window_days"] else "all",
                    "✓" if d["history"] else "",
                    d["description"],
                )
                for d in rows
            ],
        )

    @traits.command("compute")
    @handle_errors
    def compute(
        as_of: str | None = typer.Option(None, "--as-of", help="the day windows end on (default: today)"),
        only: list[str] | None = typer.Option(None, "--trait", help="compute only this trait (repeatable)"),
        definitions: Path | None = DefsOpt,
        segments: bool = typer.Option(
            True, "--refresh-segments/--no-refresh-segments", help="re-evaluate the segments that use them"
        ),
        history_only: bool = typer.Option(
            False,
            "--history-only",
            help="only record the snapshot of the as-of day (e.g. a past day) of the traits declared with "
            "`history: true`, computing what they read as of that day; current values are not touched",
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Compute traits for every person (run after ingestion and `careloop identity resolve`), then
        re-evaluate the segments that use them (entries and exits logged with cause `traits`). Traits
        declared with `history: true` also keep a snapshot per as-of day (trait_history); with
        --history-only, only that snapshot is written."""
        from careloop.profiles.segments import refresh_all, segments_using
        from careloop.profiles.traits import compute_traits, load_traits

        try:
            day = date.fromisoformat(as_of) if as_of else None
        except ValueError:
            raise ConfigError(f"--as-of must be a date like 2026-10-31, not {as_of!r}") from None
        ts = load_traits(definitions)
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            summary = compute_traits(
                store, ts, as_of=day, only=only, clock=backend.clock, current=not history_only
            )
            refreshed = (
                refresh_all(
                    store,
                    segments_using(store, list(summary.per_trait)),
                    as_of=day,
                    clock=backend.clock,
                    cause="traits",
                )
                if segments and not history_only
                else {}
            )
        if json:
            print_json({**summary.as_dict(), "segments": refreshed})
            return
        if history_only:
            print_table(
                f"trait history as of {summary.as_of:%Y-%m-%d} ({summary.seconds} s)",
                ["trait", "snapshot rows"],
                [(k, f"{v:,}") for k, v in summary.history.items()],
            )
            others = [k for k in summary.per_trait if k not in summary.history]
            console.print(
                f"{summary.values:,} snapshot rows for {summary.persons:,} persons; current values untouched"
                + (f"; computed as of that day, not stored: {', '.join(others)}" if others else "")
            )
            return
        print_table(
            f"traits as of {summary.as_of:%Y-%m-%d} ({summary.seconds} s)",
            ["trait", "values"],
            [(k, f"{v:,}") for k, v in summary.per_trait.items()],
        )
        console.print(f"{summary.values:,} values for {summary.persons:,} persons")
        if summary.history:
            console.print(
                "history kept (trait_history): " + ", ".join(f"{k} {v:,}" for k, v in summary.history.items())
            )
        for n, o in refreshed.items():
            console.print(
                f"segment {n}: {o['members']:,} members ({o['entered']:,} entered, {o['left']:,} left)"
            )

    @traits.command("show")
    @handle_errors
    def show(
        person: str = typer.Argument(..., help="unified person id"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """A person's trait values (as last computed)."""
        from careloop.profiles.traits import person_traits

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            require_person(store, person)
            rows = person_traits(store, person)
        if json:
            print_json(rows)
            return
        if not rows:
            console.print(f"{person} has no trait values yet; run `careloop traits compute`")
            return
        print_table(
            f"traits of {person}",
            ["trait", "key", "value", "as of"],
            [
                (
                    r["trait"],
                    r["key"],
                    r["value_text"]
                    if r["value_text"] is not None
                    else (r["value_time"] if r["value_time"] is not None else round(r["value_num"], 4)),
                    f"{r['as_of']:%Y-%m-%d}" if r["as_of"] else "",
                )
                for r in rows
            ],
        )

    app.add_typer(traits, name="traits")
