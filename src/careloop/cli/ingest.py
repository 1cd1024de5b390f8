"""`careloop ingest PATH --format ... [--mapping FILE]`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from careloop.cli._common import JsonOpt, err_console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.ingest.pipeline import FORMATS, Ingestor, IngestSummary


def run_ingest(
    path: Path, fmt: str, mapping: Path | None, source: str | None, workspace: str | None, quiet: bool
) -> IngestSummary:
    backend = open_backend()
    try:
        if quiet:
            return Ingestor(backend, workspace_name(workspace)).ingest(
                path, fmt, mapping=mapping, source=source
            )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} batches"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"ingesting {path.name}", total=None)

            def step(what: str, done: int, total: int) -> None:
                progress.update(task, description=f"ingested {what}", completed=done)

            ingestor = Ingestor(backend, workspace_name(workspace), progress=step)
            return ingestor.ingest(path, fmt, mapping=mapping, source=source)
    finally:
        backend.close()


def print_summary(summary: IngestSummary) -> None:
    rows = [
        (e, c.rows, c.accepted, c.updated, c.duplicates, c.quarantined)
        for e, c in sorted(summary.entities.items())
    ]
    print_table(
        f"ingest run {summary.run_id} ({summary.status}, {summary.seconds:.1f}s)",
        ["entity", "rows", "accepted", "updated", "duplicates", "quarantined"],
        rows,
    )
    if summary.quarantined:
        err_console.print(
            f"{summary.quarantined} row(s) quarantined: see `careloop quarantine list --run {summary.run_id}`"
        )


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    @handle_errors
    def ingest(
        path: Path = typer.Argument(..., help="file or folder to ingest"),
        fmt: str = typer.Option(..., "--format", "-f", help=f"one of: {', '.join(FORMATS)}"),
        mapping: Path | None = typer.Option(
            None, "--mapping", "-m", help="YAML column mapping (csv/parquet/jsonl)"
        ),
        source: str | None = typer.Option(
            None, "--source", help="source system name (overrides the mapping)"
        ),
        workspace: str | None = typer.Option(None, "--workspace", "-w", help="workspace (default: settings)"),
        json: bool = JsonOpt,
    ) -> None:
        """Validate and load a source; bad rows go to quarantine with a reason, nothing is dropped."""
        summary = run_ingest(path, fmt, mapping, source, workspace, quiet=json)
        if json:
            print_json(summary.to_dict())
        else:
            print_summary(summary)
