"""`careloop lookalike`: the persons outside a segment who most resemble its members."""

from __future__ import annotations

import csv
from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")


def register(app: typer.Typer) -> None:
    @app.command("lookalike")
    @handle_errors
    def lookalike_(
        segment: str = typer.Argument(
            ..., help="the seed segment (its stored members: `segment refresh` first)"
        ),
        top: int = typer.Option(50, "--top", help="how many lookalikes to return"),
        output: Path | None = typer.Option(None, "--output", "-o", help="also write them to this CSV file"),
        features: Path | None = typer.Option(
            None, "--features", help="persona features YAML (default: careloop's personas.yaml)"
        ),
        trait_definitions: Path | None = typer.Option(
            None,
            "--trait-definitions",
            help="the trait definitions the features refer to (default: careloop's)",
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Rank the persons outside a segment by similarity to its members (docs/personas.md#lookalikes)."""
        from careloop.profiles.features import load_feature_config
        from careloop.profiles.lookalike import lookalike

        config = load_feature_config(features, trait_definitions)
        with open_backend() as backend:
            result = lookalike(
                backend.workspace(workspace_name(workspace)),
                segment,
                top=top,
                config=config,
                clock=backend.clock,
            )
        if output is not None:
            with output.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["rank", "person_id", "score", "seed_segment"])
                w.writerows([(r["rank"], r["person_id"], r["score"], segment) for r in result.top])
        if json:
            print_json(result.as_dict())
            return
        auc = "n/a (seed too small to hold out)" if result.auc is None else f"{result.auc:.3f}"
        console.print(
            f"lookalikes of {segment}: {result.seed_members:,} seed members, {result.candidates:,} candidates; "
            f"held-out AUC {auc}",
            highlight=False,
        )
        console.print(f"method: {result.method}", highlight=False)
        console.print(
            "sets the seed apart (most first): "
            + ", ".join(f"{d['label_zh']} / {d['label_en']}" for d in result.distinguishing),
            highlight=False,
        )
        print_table(
            f"top {len(result.top)}",
            ["#", "person", "score", "依据", "because"],
            [
                (
                    r["rank"],
                    r["person_id"],
                    f"{r['score']:.3f}",
                    "；".join(b["text_zh"] for b in r["because"]),
                    "; ".join(b["text_en"] for b in r["because"]),
                )
                for r in result.top
            ],
        )
        if output is not None:
            console.print(f"{len(result.top):,} lookalikes written to {output}")
