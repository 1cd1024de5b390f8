"""`careloop persona`: personas (clusters over standardised traits, described in Chinese and English) and
the seed personas saved as segments."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, require_person, workspace_name
from careloop.config import get_settings
from careloop.errors import ConfigError

if TYPE_CHECKING:
    from careloop.profiles.personas import PersonaRun

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
FeaturesOpt = typer.Option(
    None, "--features", help="persona features YAML (default: careloop's personas.yaml, docs/personas.md)"
)
TraitDefsOpt = typer.Option(
    None, "--trait-definitions", help="the trait definitions the features refer to (default: careloop's)"
)


def print_run(run: PersonaRun) -> None:
    """The run's criterion, clusters and their descriptions, for people."""
    as_of = f", traits as of {_when(run.as_of, '%Y-%m-%d')}" if run.as_of else ""
    console.print(
        f"[bold]personas[/] run {run.run_id}: {run.persons:,} persons{as_of}, k = {run.k}  ({run.criterion})",
        highlight=False,
    )
    if run.scores:
        print_table(
            "silhouette per k",
            ["k", "silhouette", ""],
            [(k, f"{s:.3f}", "← chosen" if k == run.k else "") for k, s in sorted(run.scores.items())],
        )
    print_table(
        "personas",
        ["#", "persons", "share", "名称", "name"],
        [
            (c["cluster"], f"{c['size']:,}", f"{c['share']:.1%}", c["name_zh"], c["name_en"])
            for c in run.clusters
        ],
    )
    for c in run.clusters:
        console.print(f"[bold]{c['cluster']}[/] {c['description_zh']}", highlight=False)
        console.print(f"  {c['description_en']}", highlight=False)
    skipped = [f for f in run.features if "skipped" in f]
    for s in skipped:
        console.print(f"[yellow]feature {s['skipped']} not used:[/] {s['reason']}", highlight=False)


def _when(at: object, fmt: str) -> str:
    """A stored time in the configured zone (`fmt`), or '' when there is none."""
    if not isinstance(at, datetime):
        return "" if at is None else str(at)
    return (at.astimezone(ZoneInfo(get_settings().timezone)) if at.tzinfo else at).strftime(fmt)


def register(app: typer.Typer) -> None:
    persona = typer.Typer(
        help="Personas: clusters of patients over their traits, described in Chinese and English (docs/personas.md).",
        no_args_is_help=True,
    )

    @persona.command("build")
    @handle_errors
    def build(
        k: int | None = typer.Option(None, "--k", help="use this many clusters instead of the criterion"),
        features: Path | None = FeaturesOpt,
        trait_definitions: Path | None = TraitDefsOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Cluster every person (after `careloop traits compute`), describe the clusters and store the run."""
        from careloop.profiles.features import load_feature_config
        from careloop.profiles.personas import build_personas

        config = load_feature_config(features, trait_definitions)
        with open_backend() as backend:
            run = build_personas(
                backend.workspace(workspace_name(workspace)), config, k=k, clock=backend.clock
            )
        if json:
            print_json(run.as_dict())
            return
        print_run(run)
        console.print(f"built in {run.seconds} s; `careloop persona show` prints it again")

    @persona.command("show")
    @handle_errors
    def show(
        run_id: str | None = typer.Argument(None, help="a run id (default: the latest run)"),
        person: str | None = typer.Option(None, "--person", help="only this person's persona (latest run)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """A persona run: criterion scores, clusters, their defining traits and descriptions."""
        from careloop.profiles.personas import get_run, person_persona

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            if person is not None:
                require_person(store, person)
                mine = person_persona(store, person)
                if json:
                    print_json(mine)
                else:
                    console.print(
                        f"{person}: persona {mine['cluster']} — {mine['name_zh']} / {mine['name_en']}"
                    )
                    console.print(f"  {mine['description_zh']}\n  {mine['description_en']}", highlight=False)
                return
            run = get_run(store, run_id)
        if json:
            print_json(run.as_dict())
            return
        print_run(run)

    @persona.command("runs")
    @handle_errors
    def runs(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Persona runs, latest first."""
        from careloop.profiles.personas import list_runs

        with open_backend() as backend:
            rows = list_runs(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "persona runs",
            ["run", "computed at", "traits as of", "k", "persons", "seconds"],
            [
                (
                    r["run_id"],
                    _when(r["computed_at"], "%Y-%m-%d %H:%M"),
                    _when(r["as_of"], "%Y-%m-%d"),
                    r["k"],
                    f"{r['persons']:,}",
                    r["seconds"],
                )
                for r in rows
            ],
        )

    @persona.command("seed")
    @handle_errors
    def seed(
        refresh: bool = typer.Option(False, "--refresh", help="also evaluate them and store their members"),
        as_of: str | None = typer.Option(None, "--as-of", help="with --refresh: the day to evaluate on"),
        definitions: Path | None = typer.Option(
            None, "--definitions", help="seed personas YAML (default: careloop's seed_personas.yaml)"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Save the seed personas (慢病管理, 母婴, 老年) as segments; unchanged definitions stay as they are."""
        from careloop.profiles.personas import seed_personas

        try:
            day = date.fromisoformat(as_of) if as_of else None
        except ValueError:
            raise ConfigError(f"--as-of must be a date like 2026-10-31, not {as_of!r}") from None
        with open_backend() as backend:
            rows = seed_personas(
                backend.workspace(workspace_name(workspace)),
                definitions,
                refresh=refresh,
                as_of=day,
                clock=backend.clock,
            )
        if json:
            print_json(rows)
            return
        print_table(
            "seed personas (segments)",
            ["segment", "en", "version", "status", "members"],
            [
                (r["name"], r["en"], r["version"], r["status"], f"{r['members']:,}" if "members" in r else "")
                for r in rows
            ],
        )
        if not refresh:
            console.print(
                "`careloop persona seed --refresh` (or `careloop segment refresh NAME`) fills their members"
            )

    app.add_typer(persona, name="persona")
