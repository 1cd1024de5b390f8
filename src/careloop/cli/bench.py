"""`careloop bench [SCENARIO...]`: run benchmarks, write docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.clock import SYSTEM_CLOCK
from careloop.config import get_settings
from careloop.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("bench")
    @handle_errors
    def bench(
        scenarios: list[str] | None = typer.Argument(None, help="scenarios to run (default: all)"),
        patients: int = typer.Option(100_000, "--patients", help="size of the synthetic network"),
        seed: int = typer.Option(7, "--seed"),
        repeat: int = typer.Option(1, "--repeat", min=1, help="runs per scenario; the best is kept"),
        cache: Path = typer.Option(Path(".careloop/bench"), "--cache", help="where generated data is kept"),
        output: Path | None = typer.Option(
            None, "--output", help="markdown file (default docs/benchmarks.md)"
        ),
        json: bool = JsonOpt,
    ) -> None:
        """Measure careloop against in-run baselines and record the ratios."""
        from careloop.bench import SCENARIOS, write_results

        names = scenarios or list(SCENARIOS)
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        settings = get_settings()
        cache.mkdir(parents=True, exist_ok=True)
        results = []
        for name in names:
            if not json:
                console.print(f"running {name} at {patients:,} patients ...")
            got = SCENARIOS[name](patients, seed, cache, settings, repeat)
            results.extend(got if isinstance(got, list) else [got])
        out = output or settings.benchmarks_file
        write_results(out, results, SYSTEM_CLOCK.now())
        if json:
            print_json([{**r.__dict__, "ratio": r.ratio} for r in results])
            return
        print_table(
            f"benchmarks (written to {out})",
            ["scenario", "size", "careloop", "baseline", "ratio"],
            [
                [
                    r.scenario,
                    r.size,
                    f"{r.figure:,.1f} {r.unit}" if r.figure < 100 else f"{r.figure:,.0f} {r.unit}",
                    f"{r.baseline:,.1f} {r.unit}" if r.baseline < 100 else f"{r.baseline:,.0f} {r.unit}",
                    f"{r.ratio:.2f}",
                ]
                for r in results
            ],
        )
