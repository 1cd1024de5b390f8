"""`careloop tags`: labels over traits — list the rules, apply them, show a person's tags and why."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, require_person, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
DefsOpt = typer.Option(
    None, "--definitions", help="tag definitions YAML (default: careloop's, see docs/tags.md)"
)


def register(app: typer.Typer) -> None:
    tags = typer.Typer(
        help="Tags: labels over traits, with the values that put each there.", no_args_is_help=True
    )

    @tags.command("list")
    @handle_errors
    def list_(definitions: Path | None = DefsOpt, json: bool = JsonOpt) -> None:
        """The tags and their rules."""
        from careloop.profiles.tags import load_tags

        ts = load_tags(definitions)
        rows = [{"tag": t.name, "en": t.label_en, "rule": t.rule_text} for t in ts.tags.values()]
        if json:
            print_json({"version": ts.version, "tags": rows})
            return
        print_table(
            f"tags (version {ts.version})",
            ["tag", "en", "rule"],
            [(r["tag"], r["en"], r["rule"]) for r in rows],
        )

    @tags.command("apply")
    @handle_errors
    def apply(
        as_of: str | None = typer.Option(
            None, "--as-of", help="the day relative dates count from (default: today)"
        ),
        definitions: Path | None = DefsOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Tag every person from their traits (run `careloop traits compute` first)."""
        from careloop.profiles.tags import apply_tags, load_tags

        try:
            day = date.fromisoformat(as_of) if as_of else None
        except ValueError:
            raise ConfigError(f"--as-of must be a date like 2026-10-31, not {as_of!r}") from None
        ts = load_tags(definitions)
        with open_backend() as backend:
            summary = apply_tags(
                backend.workspace(workspace_name(workspace)), ts, as_of=day, clock=backend.clock
            )
        if json:
            print_json(summary.as_dict())
            return
        print_table(
            f"tags version {summary.version}: {summary.tagged:,} of {summary.persons:,} persons tagged ({summary.seconds} s)",
            ["tag", "persons"],
            [(k, f"{v:,}") for k, v in summary.per_tag.items()],
        )

    @tags.command("show")
    @handle_errors
    def show(
        person: str = typer.Argument(..., help="unified person id"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """A person's tags, each with its rule and the trait values that made it hold."""
        from careloop.profiles.tags import person_tags

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            require_person(store, person)
            rows = person_tags(store, person)
        if json:
            print_json(rows)
            return
        if not rows:
            console.print(f"{person} has no tags; run `careloop traits compute` then `careloop tags apply`")
            return
        print_table(
            f"tags of {person}",
            ["tag", "en", "rule", "because"],
            [(r["tag"], r["label_en"], r["rule"], _because(r["evidence"])) for r in rows],
        )

    app.add_typer(tags, name="tags")


def _because(evidence: dict[str, object]) -> str:
    """The leaf values of a verdict, e.g. 'pdc_adherent[*]={ARB: 0.0}; age=67.0'."""
    out: list[str] = []

    def walk(v: dict[str, object]) -> None:
        kids = v.get("because")
        if isinstance(kids, list):
            for k in kids:
                if (isinstance(k, dict) and k.get("holds") == v.get("holds")) or v.get("condition") == "not":
                    walk(k)  # type: ignore[arg-type]
            return
        out.append(f"{str(v['condition']).split(' ')[0]} = {v.get('seen')}")

    walk(evidence)
    return "; ".join(out)
