"""`careloop identity`: person matching. `dedupe` clusters the rows of any person file."""

from __future__ import annotations

from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table


def register(app: typer.Typer) -> None:
    identity = typer.Typer(
        help="Person identity: resolve the store into unified persons, merge / split, de-duplicate files.",
        no_args_is_help=True,
    )

    @identity.command("dedupe")
    @handle_errors
    def dedupe(
        input_path: Path = typer.Argument(..., metavar="INPUT", help="person file: .csv, .tsv or .parquet"),
        config: Path = typer.Option(..., "--config", "-c", help="YAML mapping: field -> input column"),
        output: Path = typer.Option(..., "--output", "-o", help="output .csv (or .parquet)"),
        threshold: float = typer.Option(0.9, "--threshold", help="match probability to join two records"),
        seed: int = typer.Option(42, "--seed", help="seed for the random sampling of u probabilities"),
        json: bool = JsonOpt,
    ) -> None:
        """Cluster the rows that are the same person; write every row with cluster_id and match_probability."""
        from careloop.errors import ConfigError
        from careloop.identity.dedupe import dedupe_file, input_columns, load_dedupe_mapping

        try:
            mapping = load_dedupe_mapping(config)
        except ConfigError as e:
            columns = input_columns(input_path) or input_columns(input_path, "gb18030")
            if not columns:
                raise
            raise ConfigError(f"{e}. The input's columns are: {', '.join(columns)}") from None
        summary = dedupe_file(input_path, mapping, output, threshold=threshold, seed=seed)
        if json:
            print_json(summary.as_dict())
            return
        print_table(
            f"dedupe of {input_path.name}",
            [
                "rows",
                "clusters",
                "rows in multi-row clusters",
                "largest cluster",
                "pairs ≥ threshold",
                "seconds",
            ],
            [
                (
                    f"{summary.rows:,}",
                    f"{summary.clusters:,}",
                    f"{summary.rows_in_clusters:,}",
                    summary.largest_cluster,
                    f"{summary.pairs_above_threshold:,}",
                    summary.seconds,
                )
            ],
        )
        console.print(f"written to {summary.output} (threshold {summary.threshold})")

    from careloop.cli.identity_report import add_report_command

    add_report_command(identity)
    from careloop.cli.identity_resolve import add_resolve_commands

    add_resolve_commands(identity)
    app.add_typer(identity, name="identity")
