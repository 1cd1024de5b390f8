"""`careloop quarantine list|show|export`: rows that failed validation, with their reasons."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import NotFoundError
from careloop.ingest.quarantine import QuarantineView

quarantine_app = typer.Typer(help="Inspect and export quarantined rows.", no_args_is_help=True)

_COLUMNS = ["id", "run_id", "source", "entity", "file", "line", "field", "reason"]


def _view(workspace: str | None) -> tuple[Any, QuarantineView]:
    backend = open_backend()
    return backend, QuarantineView(backend.workspace(workspace_name(workspace)))


@quarantine_app.command("list")
@handle_errors
def list_(
    run: str | None = typer.Option(None, "--run", help="only this ingest run"),
    entity: str | None = typer.Option(None, "--entity", help="only this entity"),
    limit: int = typer.Option(50, "--limit", help="rows to show (0 = all)"),
    workspace: str | None = typer.Option(None, "--workspace", "-w"),
    json: bool = JsonOpt,
) -> None:
    """List quarantined rows, newest run first."""
    backend, view = _view(workspace)
    try:
        rows = view.list(run=run, entity=entity, limit=limit or None)
        if json:
            print_json({"total": view.count(run=run, entity=entity), "rows": rows})
            return
        print_table(
            f"quarantine ({view.count(run=run, entity=entity)} rows)",
            _COLUMNS,
            [[r[c] for c in _COLUMNS] for r in rows],
        )
    finally:
        backend.close()


@quarantine_app.command("show")
@handle_errors
def show(
    qid: str = typer.Argument(..., help="quarantine row id (from `quarantine list`)"),
    workspace: str | None = typer.Option(None, "--workspace", "-w"),
    json: bool = JsonOpt,
) -> None:
    """One quarantined row with its original values (personal identifiers masked)."""
    backend, view = _view(workspace)
    try:
        row = view.show(qid)
        if row is None:
            raise NotFoundError(f"no quarantined row {qid!r}; list them with `careloop quarantine list`")
        if json:
            print_json(row)
            return
        for k, v in row.items():
            if k != "raw":
                console.print(f"[bold]{k}[/]: {v}", highlight=False)
        console.print("[bold]raw[/]:", highlight=False)
        console.print(orjson.dumps(row["raw"], option=orjson.OPT_INDENT_2).decode(), highlight=False)
    finally:
        backend.close()


@quarantine_app.command("export")
@handle_errors
def export(
    output: Path = typer.Option(..., "--output", "-o", help="CSV file to write (- for stdout)"),
    run: str | None = typer.Option(None, "--run"),
    entity: str | None = typer.Option(None, "--entity"),
    workspace: str | None = typer.Option(None, "--workspace", "-w"),
    json: bool = JsonOpt,
) -> None:
    """Write quarantined rows (reasons and masked original values) to CSV for fixing at the source."""
    backend, view = _view(workspace)
    try:
        rows = view.list(run=run, entity=entity, limit=None, with_raw=True)
        fh = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8", newline="")
        try:
            writer = csv.writer(fh)
            writer.writerow([*_COLUMNS, "raw"])
            for r in rows:
                writer.writerow([*(r[c] for c in _COLUMNS), orjson.dumps(r["raw"]).decode()])
        finally:
            if fh is not sys.stdout:
                fh.close()
        if json:
            print_json({"rows": len(rows), "output": str(output)})
        elif str(output) != "-":
            console.print(f"wrote {len(rows)} row(s) to {output}")
    finally:
        backend.close()


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
