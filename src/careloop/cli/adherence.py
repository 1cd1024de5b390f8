"""`careloop adherence pdc`: PDC and MPR per patient and drug class for any pharmacy fills file."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.errors import ConfigError


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date like 2018-01-01, not {text!r}") from None


def register(app: typer.Typer) -> None:
    adherence = typer.Typer(help="Medication adherence (PQA PDC and MPR).", no_args_is_help=True)

    @adherence.command("pdc")
    @handle_errors
    def pdc(
        fills: Path = typer.Option(
            ..., "--fills", help="fills file: .csv, .tsv or .parquet, one row per fill"
        ),
        period_start: str = typer.Option(..., "--period-start", help="first day of the measurement period"),
        period_end: str = typer.Option(..., "--period-end", help="last day of the measurement period"),
        patient_col: str | None = typer.Option(
            None, "--patient-col", help="default: patient_id, patient, ..."
        ),
        drug_col: str | None = typer.Option(None, "--drug-col", help="default: drug, drug_code, ndc, ..."),
        class_col: str | None = typer.Option(None, "--class-col", help="default: drug_class, class, ..."),
        date_col: str | None = typer.Option(None, "--date-col", help="default: fill_date, date, ..."),
        days_col: str | None = typer.Option(None, "--days-col", help="default: days_supply, days, ..."),
        threshold: float | None = typer.Option(
            None,
            "--threshold",
            help="adherent at PDC >= this (default 0.80; 0.90 for antiretroviral classes)",
        ),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="write every patient x class row as CSV"
        ),
        rejects: Path | None = typer.Option(
            None, "--rejects", help="write rejected rows (line, reason) as CSV"
        ),
        json: bool = JsonOpt,
    ) -> None:
        """PDC (class level, same-drug refills shifted, supply carried in) and MPR per patient and class."""
        from careloop.profiles.adherence import adherence as compute
        from careloop.profiles.fills_file import read_fills

        start, end = _day(period_start, "--period-start"), _day(period_end, "--period-end")
        if end < start:
            raise ConfigError("--period-end is before --period-start")
        if threshold is not None and not 0 < threshold <= 1:
            raise ConfigError("--threshold must be between 0 and 1, e.g. 0.8")
        cols = {
            "patient": patient_col,
            "drug": drug_col,
            "class": class_col,
            "date": date_col,
            "days": days_col,
        }
        data = read_fills(fills, cols)
        results = compute(data.fills, start, end, threshold=threshold)
        rows = [r.as_dict() for r in results]
        if output:
            with output.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["patient"])
                w.writeheader()
                w.writerows(rows)
        if rejects:
            with rejects.open("w", newline="", encoding="utf-8") as f:
                w2 = csv.writer(f)
                w2.writerow(["line", "reason"])
                w2.writerows([(r.line, r.reason) for r in data.rejected])
        summary = _by_class(results)
        out: dict[str, Any] = {
            "period_start": start,
            "period_end": end,
            "columns": data.columns,
            "fills_read": len(data.fills),
            "rejected": len(data.rejected),
            "rejected_rows": [{"line": r.line, "reason": r.reason} for r in data.rejected[:50]],
            "by_class": summary,
            "rows": rows,
        }
        if json:
            print_json(out)
            return
        print_table(
            f"adherence {start} .. {end} ({len(data.fills):,} fills; {len(data.rejected):,} rows rejected)",
            ["class", "patients", "eligible (>=2 fills)", "adherent", "mean PDC", "mean MPR (capped)"],
            [
                (c, s["patients"], s["eligible"], s["adherent"], s["mean_pdc"], s["mean_mpr_capped"])
                for c, s in summary.items()
            ],
        )
        if len(rows) <= 20:
            print_table(
                "per patient",
                [
                    "patient",
                    "class",
                    "index date",
                    "days covered",
                    "days",
                    "PDC",
                    "MPR",
                    "adherent",
                    "run-out",
                ],
                [
                    (
                        r["patient"],
                        r["drug_class"],
                        r["index_date"],
                        r["days_covered"],
                        r["days_in_period"],
                        None if r["pdc"] is None else f"{r['pdc']:.4f}",
                        None if r["mpr"] is None else f"{r['mpr']:.4f}",
                        r["adherent"],
                        r["run_out_date"],
                    )
                    for r in rows
                ],
            )
        for r in data.rejected[:5]:
            console.print(f"[yellow]rejected line {r.line}:[/] {r.reason}", highlight=False)
        if output:
            console.print(f"written to {output}")

    app.add_typer(adherence, name="adherence")


def _by_class(results: list[Any]) -> dict[str, dict[str, Any]]:
    acc: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        acc[r.drug_class].append(r)
    out = {}
    for cls, rs in sorted(acc.items()):
        eligible = [r for r in rs if r.eligible]
        out[cls] = {
            "patients": len(rs),
            "eligible": len(eligible),
            "adherent": sum(1 for r in eligible if r.adherent),
            "mean_pdc": round(sum(r.pdc for r in eligible) / len(eligible), 4) if eligible else None,
            "mean_mpr_capped": round(sum(r.mpr_capped for r in eligible) / len(eligible), 4)
            if eligible
            else None,
        }
    return out
