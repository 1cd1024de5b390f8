"""`careloop synth`: generate the synthetic regional healthcare network (data, truth and mapping)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.errors import ConfigError


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--as-of must be a date like 2026-10-31 (got {value!r})") from None


def run_synth(
    out: Path, patients: int, seed: int, as_of: str, years: int, fmt: str, force: bool, quiet: bool
) -> dict[str, Any]:
    from careloop.synth import generate_network

    return generate_network(
        out,
        patients,
        seed,
        _parse_date(as_of),
        fmt,
        years=years,
        overwrite=force,
        quiet=quiet,
    )


def print_summary(summary: dict[str, Any]) -> None:
    by_entity: dict[str, int] = {}
    for path, rows in summary["files"].items():
        entity = path.rsplit("/", 1)[-1].split(".")[0]
        by_entity[entity] = by_entity.get(entity, 0) + rows
    print_table(
        f"synthetic network in {summary['out_dir']} ({summary['patients']:,} patients, seed {summary['seed']}, "
        f"as of {summary['as_of']})",
        ["entity", "rows", "files"],
        [
            (e, f"{n:,}", sum(1 for p in summary["files"] if p.rsplit("/", 1)[-1].split(".")[0] == e))
            for e, n in sorted(by_entity.items(), key=lambda x: -x[1])
        ],
    )
    print_table("ground truth", ["file", "rows"], [(p, f"{n:,}") for p, n in summary["truth"].items()])
    console.print(
        f"{summary['total_rows']:,} rows ({summary['rows_per_patient']} per patient) in {summary['seconds']} s; "
        f"mapping: {summary['mapping']}\n"
        f"ingest with: careloop ingest {summary['out_dir']} --format {summary['format']}"
    )


def register(app: typer.Typer) -> None:
    @app.command("synth")
    @handle_errors
    def synth(
        patients: int = typer.Option(10_000, "--patients", "-n", help="number of people in the network"),
        seed: int = typer.Option(7, "--seed", help="random seed; same arguments give identical files"),
        out: Path = typer.Option(
            ..., "--out", "-o", help="output folder (created; must be empty unless --force)"
        ),
        as_of: str = typer.Option("2026-10-31", "--as-of", help="last day of the generated history"),
        years: int = typer.Option(2, "--years", help="length of the history in years"),
        fmt: str = typer.Option("parquet", "--format", "-f", help="parquet or csv"),
        force: bool = typer.Option(False, "--force", help="replace a network previously generated in --out"),
        json: bool = JsonOpt,
    ) -> None:
        """Generate a synthetic Chinese regional healthcare network with its ground truth.

        Writes OUT/<source>/<entity>.parquet for every source system, OUT/truth/*.parquet and
        OUT/careloop-mapping.yaml (ingest with `careloop ingest OUT --format parquet`).
        """
        summary = run_synth(out, patients, seed, as_of, years, fmt, force, quiet=json)
        if json:
            print_json(summary)
        else:
            print_summary(summary)
