"""`careloop models`: value and risk models — fit, score, list and report (docs/models.md).

Each family adds its own sub-commands (`register_family` below); `list` and `report` work on any saved
model through its card.
"""

from __future__ import annotations

from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import workspace_name

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Value and risk models (docs/models.md).", no_args_is_help=True)

    @models.command("list")
    @handle_errors
    def list_(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """The fitted models of the workspace: family, version, when, on what data."""
        from careloop.models.base import registry

        cards = registry(workspace_name(workspace)).cards()
        if json:
            print_json([c.as_dict() for c in cards])
            return
        if not cards:
            console.print("no fitted models yet; `careloop models --help` lists the families")
            return
        print_table(
            "models",
            ["name", "family", "version", "trained at", "data hash"],
            [
                [c.name, c.family, c.family_version, f"{c.trained_at:%Y-%m-%d %H:%M}", c.data_hash[:12]]
                for c in cards
            ],
        )

    @models.command("report")
    @handle_errors
    def report(
        name: str = typer.Argument(..., help="model name (`careloop models list`)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """A saved model's report: its accuracy figures, backtest window and data size, as stored with it."""
        from careloop.models.base import registry

        card = registry(workspace_name(workspace)).card(name)
        if json:
            print_json(card.as_dict())
            return
        console.print(
            f"[bold]{card.name}[/] — {card.family} v{card.family_version}, careloop {card.careloop_version}, "
            f"trained {card.trained_at:%Y-%m-%d %H:%M}, data {card.data_hash[:12]}"
        )
        scalars = [[k, _fmt(v)] for k, v in card.report.items() if not isinstance(v, dict | list)]
        if scalars:
            print_table("report", ["figure", "value"], scalars)
        for k, v in card.report.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                cols = list(v[0])
                print_table(k, cols, [[_fmt(r.get(c)) for c in cols] for r in v])
            elif isinstance(v, dict):
                print_table(k, ["key", "value"], [[a, _fmt(b)] for a, b in v.items()])

    register_families(models)
    app.add_typer(models, name="models")


def register_families(models: typer.Typer) -> None:
    """Each model family's own sub-commands (fit, score, ...)."""
    from careloop.cli import models_risk, models_value

    models_value.register(models)
    models_risk.register(models)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
