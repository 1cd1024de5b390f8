"""`careloop retention` (plan / purge by the retention rules) and `careloop export aggregate` (k-anonymous)."""

from __future__ import annotations

from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
RulesOpt = typer.Option(
    None, "--rules", help="retention rules YAML (default: CARELOOP_RETENTION_FILE or careloop's)"
)


def register(app: typer.Typer) -> None:
    ret = typer.Typer(
        help="Retention: how long data is kept, per table (docs/privacy.md#retention).", no_args_is_help=True
    )

    def _show(lines: list, title: str, json: bool) -> None:  # type: ignore[type-arg]
        if json:
            print_json([ln.as_dict() for ln in lines])
            return
        print_table(
            title,
            ["table", "column", "keep", "cut-off", "class / level", "rows", "basis"],
            [
                (
                    ln.table,
                    ln.column,
                    ln.keep,
                    f"{ln.cutoff:%Y-%m-%d}",
                    f"{ln.data_class} / {ln.level}",
                    f"{ln.rows:,}",
                    ln.basis,
                )
                for ln in lines
            ],
        )

    @ret.command("plan")
    @handle_errors
    def plan(
        rules: Path | None = RulesOpt, workspace: str | None = WorkspaceOpt, json: bool = JsonOpt
    ) -> None:
        """Dry run: per table, how many rows a purge now would delete, by which rule and cut-off."""
        from careloop.privacy.retention import load_rules
        from careloop.privacy.retention import plan as do_plan

        with open_backend() as backend:
            lines = do_plan(backend.workspace(workspace_name(workspace)), rules=load_rules(rules))
        _show(lines, "retention plan (nothing deleted)", json)

    @ret.command("purge")
    @handle_errors
    def purge(
        yes: bool = typer.Option(False, "--yes", help="confirm the deletion"),
        rules: Path | None = RulesOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Delete the rows past their retention period (in batches; audited)."""
        from careloop.privacy.audit import cli_actor
        from careloop.privacy.retention import load_rules
        from careloop.privacy.retention import purge as do_purge

        if not yes:
            raise ConfigError("purging deletes data for good: see `careloop retention plan`, then add --yes")
        with open_backend() as backend:
            lines = do_purge(
                backend.workspace(workspace_name(workspace)), rules=load_rules(rules), actor=cli_actor()
            )
        _show(lines, "retention purge (deleted)", json)

    app.add_typer(ret, name="retention")

    exp = typer.Typer(help="Safe exports: aggregate (k-anonymous) data for sharing.", no_args_is_help=True)

    @exp.command("aggregate")
    @handle_errors
    def aggregate(
        by: str = typer.Option(
            ..., "--by", help="comma-separated: age_band, sex, province, city, district, or traits"
        ),
        measure: str = typer.Option("count", "--measure", help="count, mean:TRAIT or sum:TRAIT"),
        k: int | None = typer.Option(
            None, "--k", help="minimum persons per cell (default CARELOOP_EXPORT_K, 10)"
        ),
        output: Path | None = typer.Option(None, "--output", "-o", help="CSV, or .json"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Persons counted by quasi-identifiers; cells under k persons are written as "<k"."""
        from careloop.privacy.audit import audit_event, cli_actor
        from careloop.privacy.export import aggregate as do_aggregate
        from careloop.privacy.export import write_aggregate

        dims = [d.strip() for d in by.split(",") if d.strip()]
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            result = do_aggregate(store, dims, measure, k=k)
            audit_event(
                store,
                actor=cli_actor(),
                action="export",
                target_kind="aggregate",
                target_id=",".join(dims)[:200],
                detail={
                    "cells": result["cells"],
                    "suppressed": result["suppressed"],
                    "k": result["k"],
                    "measure": measure,
                },
            )
        if output:
            write_aggregate(result, output)
            console.print(
                f"{result['cells']} cells ({result['suppressed']} under k={result['k']} suppressed) written to {output}"
            )
            return
        if json:
            print_json(result)
            return
        print_table(
            f"persons by {', '.join(dims)} (k = {result['k']})",
            result["columns"],
            [[r[c] for c in result["columns"]] for r in result["rows"]],
        )

    app.add_typer(exp, name="export")
