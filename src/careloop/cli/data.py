"""`careloop db|workspace|schema|runs`: the store, its workspaces, the data dictionary, ingest runs."""

from __future__ import annotations

from typing import Any

import typer

from careloop.cli._common import JsonOpt, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.config import get_settings
from careloop.domain import entities
from careloop.storage.migrations import LATEST_VERSION
from careloop.storage.queries import data_dictionary, entity_counts, ingest_runs

db_app = typer.Typer(help="The database: migrate and status.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces (tenants): one per hospital group or brand.", no_args_is_help=True)


def _safe_url(url: str) -> str:
    """The URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return url


@db_app.command("migrate")
@handle_errors
def migrate(json: bool = JsonOpt) -> None:
    """Create or upgrade the schema (also done automatically on every command)."""
    from careloop.storage import connect

    backend = connect(get_settings().database_url, migrate=False)
    try:
        applied = backend.migrate()
        out = {"applied": applied, "version": backend.schema_version()}
    finally:
        backend.close()
    if json:
        print_json(out)
    else:
        typer.echo(f"schema at version {out['version']}; applied: {', '.join(applied) or 'nothing'}")


@db_app.command("status")
@handle_errors
def status(workspace: str | None = typer.Option(None, "--workspace", "-w"), json: bool = JsonOpt) -> None:
    """Database URL, schema version, workspaces and row counts of the current workspace."""
    backend = open_backend()
    try:
        ws = workspace_name(workspace)
        out: dict[str, Any] = {
            "database_url": _safe_url(backend.url),
            "schema_version": backend.schema_version(),
            "code_schema_version": LATEST_VERSION,
            "workspaces": backend.workspaces(),
            "workspace": ws,
            "rows": entity_counts(backend.workspace(ws)),
        }
    finally:
        backend.close()
    if json:
        print_json(out)
        return
    typer.echo(f"{out['database_url']} — schema v{out['schema_version']}, workspace {ws}")
    print_table(f"rows in workspace {ws}", ["entity", "rows"], sorted(out["rows"].items()))


@ws_app.command("list")
@handle_errors
def ws_list(json: bool = JsonOpt) -> None:
    """List workspaces."""
    backend = open_backend()
    try:
        names = backend.workspaces()
    finally:
        backend.close()
    if json:
        print_json(names)
    else:
        print_table("workspaces", ["id"], [[n] for n in names])


@ws_app.command("create")
@handle_errors
def ws_create(
    name: str = typer.Argument(..., help="lowercase id, e.g. hz-first-hospital"), json: bool = JsonOpt
) -> None:
    """Create a workspace."""
    backend = open_backend()
    try:
        backend.ensure_workspace(name)
    finally:
        backend.close()
    if json:
        print_json({"workspace": name, "created": True})
    else:
        typer.echo(f"workspace {name} ready; use it with --workspace {name} or CARELOOP_WORKSPACE={name}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(ws_app, name="workspace")

    @app.command("schema")
    @handle_errors
    def schema(
        entity: str | None = typer.Argument(None, help="an entity; all when omitted"),
        json: bool = JsonOpt,
        markdown: bool = typer.Option(
            False,
            "--markdown",
            help="every table (entities and operational) as the DSL Art 21 classification page",
        ),
    ) -> None:
        """The data dictionary: fields with type, data class, sensitivity level and personal-data kind."""
        if markdown:
            from careloop.privacy.classification import classification_markdown

            typer.echo(classification_markdown())
            return
        names = [entity] if entity else list(entities())
        out = {n: data_dictionary(n) for n in names}
        if json:
            print_json(out)
            return
        for n, d in out.items():
            print_table(
                f"{n} — {d['description']}",
                ["column", "type", "required", "class", "level", "personal data"],
                [
                    [
                        c["name"],
                        c["type"],
                        "yes" if c["required"] else "",
                        c["class"],
                        c["level"],
                        (
                            f"{c['pii']} (encrypted)"
                            if c["pii"]
                            else (f"blind index of {c['blind_index_of']}" if c["blind_index_of"] else "")
                        ),
                    ]
                    for c in d["columns"]
                ],
            )

    @app.command("config")
    @handle_errors
    def config(json: bool = JsonOpt) -> None:
        """The effective settings (from CARELOOP_* variables, .env and defaults); no secrets shown."""
        s = get_settings()
        out = {
            name: (_safe_url(str(value)) if name == "database_url" else str(value))
            for name, value in s.model_dump().items()
        }
        if json:
            print_json(out)
        else:
            print_table(
                "settings",
                ["setting", "environment variable", "value"],
                [[k, f"CARELOOP_{k.upper()}", v] for k, v in out.items()],
            )

    @app.command("runs")
    @handle_errors
    def runs(
        limit: int = typer.Option(20, "--limit"),
        workspace: str | None = typer.Option(None, "--workspace", "-w"),
        json: bool = JsonOpt,
    ) -> None:
        """Recent ingest runs with their counts."""
        backend = open_backend()
        try:
            rows = ingest_runs(backend.workspace(workspace_name(workspace)), limit)
        finally:
            backend.close()
        if json:
            print_json(rows)
            return
        print_table(
            "ingest runs",
            ["run_id", "status", "format", "path", "rows", "quarantined", "seconds"],
            [
                [r["run_id"], r["status"], r["format"], r["path"], r["rows"], r["quarantined"], r["seconds"]]
                for r in rows
            ],
        )
