"""`careloop models rfm ...` and `careloop models clv ...`: value models on the store or on any transaction
file (docs/models.md)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.clock import SYSTEM_CLOCK
from careloop.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from careloop.models.clv import ClvRun
    from careloop.models.rfm import RfmResult

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
ConfigOpt = typer.Option(
    None, "--config", help="YAML settings merged over the family's defaults (docs/models.md)"
)
TransactionsOpt = typer.Option(
    None, "--transactions", help="a transaction file (.csv, .tsv or .parquet) instead of the store"
)
CustomerOpt = typer.Option("customer_id", "--customer-col", help="column naming the customer")
DateOpt = typer.Option("date", "--date-col", help="column with the transaction date")
DateFormatOpt = typer.Option(
    None,
    "--date-format",
    help="strftime format of the dates, e.g. '%d/%m/%Y' (default: YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)",
)
OutputOpt = typer.Option(None, "--output", "-o", help="write one row per customer (.csv or .parquet)")
SaveOpt = typer.Option(
    None, "--save", help="keep the result as a named model (`careloop models report NAME`)"
)

PARAM_NAMES = {
    "r": "r (purchase-rate shape)",
    "alpha": "α (purchase-rate scale)",
    "a": "a (dropout beta)",
    "b": "b (dropout beta)",
    "s": "s (lifetime shape)",
    "beta": "β (lifetime scale)",
    "p": "p (spend shape)",
    "q": "q (spend-scale shape)",
    "v": "v (spend-scale rate)",
}


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date like 2026-10-31, not {text!r}") from None


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    if not path.exists():
        raise ConfigError(f"--config {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (see docs/models.md)")
    return data


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif path.suffix.lower() in (".csv", ".txt", ""):
        frame.to_csv(path, index=False)
    else:
        raise ConfigError(f"--output {path.name}: give a .csv or .parquet file")


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def register(models: typer.Typer) -> None:
    rfm = typer.Typer(
        help="RFM scores (quantile bins) and the eight RFM segments (docs/models.md).", no_args_is_help=True
    )
    clv = typer.Typer(
        help="Lifetime value: BG/NBD or Pareto/NBD + Gamma-Gamma with pymc-marketing (docs/models.md).",
        no_args_is_help=True,
    )

    @rfm.command("score")
    @handle_errors
    def rfm_score(
        transactions: Path | None = TransactionsOpt,
        customer_col: str = CustomerOpt,
        date_col: str = DateOpt,
        value_col: str = typer.Option("amount", "--value-col", help="column with the transaction value"),
        date_format: str | None = DateFormatOpt,
        as_of: str | None = typer.Option(
            None,
            "--as-of",
            help="recency is measured to this day (default: a file's last day; the traits' as-of day)",
        ),
        bins: int | None = typer.Option(None, "--bins", help="quantile bins per measure (default 5)"),
        window_days: int | None = typer.Option(
            None, "--window-days", help="file: frequency and monetary over the last N days (default: all)"
        ),
        config: Path | None = ConfigOpt,
        output: Path | None = OutputOpt,
        save: str | None = SaveOpt,
        write: bool = typer.Option(
            True, "--write/--no-write", help="store: write the rfm_* traits (default) or only report"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Score recency, frequency and monetary value 1-5 and name each person's RFM segment.

        Without --transactions, scores every person from the traits last_fill_at, fills_365d and spend_365d
        (`careloop traits compute` first) and writes rfm_r, rfm_f, rfm_m and rfm_segment as traits."""
        from careloop.config import get_settings
        from careloop.models.rfm import (
            FAMILY,
            rfm_from_store,
            rfm_from_transactions,
            save_rfm,
            write_rfm_traits,
        )
        from careloop.models.runs import record_fit, record_scores
        from careloop.models.transactions import read_transactions

        user = _read_config(config)
        if bins is not None:
            user["bins"] = bins
        if window_days is not None:
            user["window_days"] = window_days
        day = _day(as_of, "--as-of")
        ws = workspace_name(workspace)
        written: dict[str, Any] | None = None
        if transactions is not None:
            tx = read_transactions(
                transactions,
                customer_col=customer_col,
                date_col=date_col,
                value_col=value_col,
                date_format=date_format,
                timezone=get_settings().timezone,
            )
            result = rfm_from_transactions(tx, user, as_of=day)
            if save:
                card = save_rfm(result, save, ws, clock=SYSTEM_CLOCK)
                with open_backend() as backend:
                    record_fit(backend.workspace(ws), card, source="file")
        else:
            with open_backend() as backend:
                store = backend.workspace(ws)
                result = rfm_from_store(store, user, as_of=day, clock=backend.clock)
                if write:
                    written = write_rfm_traits(store, result, clock=backend.clock)
                    record_scores(
                        store, model=save or "rfm", family=FAMILY, persons=result.size, traits=written
                    )
                if save:
                    record_fit(store, save_rfm(result, save, ws, clock=backend.clock))
        if output:
            _write(result.frame(), output)
        report = result.report()
        if written is not None:
            report["traits"] = {k: v["values"] for k, v in written.items()}
        if save:
            report["saved"] = save
        if json:
            print_json(report)
            return
        _print_rfm(result, report)

    @clv.command("fit")
    @handle_errors
    def clv_fit(
        transactions: Path = typer.Option(
            ..., "--transactions", help="transaction file (.csv, .tsv, .parquet)"
        ),
        customer_col: str = CustomerOpt,
        date_col: str = DateOpt,
        value_col: str | None = typer.Option(
            None, "--value-col", help="column with the transaction value (needed for Gamma-Gamma and value)"
        ),
        date_format: str | None = DateFormatOpt,
        observation_end: str | None = typer.Option(
            None,
            "--observation-end",
            help="last day of the calibration period; later transactions are ignored (default: the last date)",
        ),
        time_unit: str | None = typer.Option(
            None, "--time-unit", help="day (default) or week (= days / 7, continuous time)"
        ),
        model: str | None = typer.Option(None, "--model", help="bgnbd (default) or paretonbd"),
        method: str | None = typer.Option(
            None, "--method", help="map (default, point estimate) or mcmc (full posterior, NUTS)"
        ),
        draws: int | None = typer.Option(None, "--draws", help="mcmc: draws per chain (default 1000)"),
        tune: int | None = typer.Option(None, "--tune", help="mcmc: tuning steps per chain (default 1000)"),
        chains: int | None = typer.Option(None, "--chains", help="mcmc: chains (default 2)"),
        horizon_days: float | None = typer.Option(
            None, "--horizon-days", help="prediction horizon in days (default 365)"
        ),
        config: Path | None = ConfigOpt,
        output: Path | None = OutputOpt,
        save: str | None = SaveOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Fit BG/NBD (or Pareto/NBD) and Gamma-Gamma on any transaction file and print the parameters.

        Purchases are counted per distinct day; transactions after --observation-end are ignored."""
        from careloop.models.clv import fit_file
        from careloop.models.runs import record_fit

        user = _clv_options(_read_config(config), time_unit, model, method, draws, tune, chains, horizon_days)
        run = fit_file(
            transactions,
            customer_col=customer_col,
            date_col=date_col,
            value_col=value_col,
            date_format=date_format,
            config=user,
            observation_end=_day(observation_end, "--observation-end"),
            save=save,
            workspace=workspace_name(workspace),
            clock=SYSTEM_CLOCK,
        )
        if run.card is not None:
            with open_backend() as backend:
                record_fit(backend.workspace(workspace_name(workspace)), run.card, source="file")
        if output:
            _write(run.frame(), output)
        _show_clv(run, save, json)

    @clv.command("score")
    @handle_errors
    def clv_score(
        horizon_days: float | None = typer.Option(
            None, "--horizon-days", help="prediction horizon in days (default 365)"
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="end of the calibration period (default: today in CARELOOP_TIMEZONE)"
        ),
        saved: str | None = typer.Option(
            None,
            "--saved",
            help="use this saved model (its own model, time unit and parameters) instead of fitting",
        ),
        time_unit: str | None = typer.Option(None, "--time-unit", help="day (default) or week"),
        model: str | None = typer.Option(None, "--model", help="bgnbd (default) or paretonbd"),
        method: str | None = typer.Option(None, "--method", help="map (default) or mcmc"),
        draws: int | None = typer.Option(None, "--draws", help="mcmc: draws per chain"),
        tune: int | None = typer.Option(None, "--tune", help="mcmc: tuning steps per chain"),
        chains: int | None = typer.Option(None, "--chains", help="mcmc: chains"),
        config: Path | None = ConfigOpt,
        output: Path | None = OutputOpt,
        save: str | None = SaveOpt,
        write: bool = typer.Option(True, "--write/--no-write", help="write the clv_* traits (default)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Fit on the store's dispenses per person (or use --saved NAME) and write clv_expected_purchases,
        clv_p_alive and clv_value as traits."""
        from careloop.models.clv import FAMILY, score_store
        from careloop.models.runs import record_fit, record_scores

        user = _clv_options(_read_config(config), time_unit, model, method, draws, tune, chains, horizon_days)
        ws = workspace_name(workspace)
        with open_backend() as backend:
            run = score_store(
                backend.workspace(ws),
                user,
                as_of=_day(as_of, "--as-of"),
                model_name=saved,
                save=save,
                workspace=ws,
                clock=backend.clock,
                write=write,
            )
            store = backend.workspace(ws)
            if run.card is not None:
                record_fit(store, run.card)
            record_scores(
                store,
                model=saved or save or "clv",
                family=FAMILY,
                persons=len(run.summary),
                traits=run.report.get("traits"),
            )
        if output:
            _write(run.frame().rename(columns={"customer": "person_id"}), output)
        _show_clv(run, save, json)

    models.add_typer(rfm, name="rfm")
    models.add_typer(clv, name="clv")


def _clv_options(
    user: dict[str, Any],
    time_unit: str | None,
    model: str | None,
    method: str | None,
    draws: int | None,
    tune: int | None,
    chains: int | None,
    horizon_days: float | None,
) -> dict[str, Any]:
    for key, value in (
        ("time_unit", time_unit),
        ("model", model),
        ("method", method),
        ("horizon_days", horizon_days),
    ):
        if value is not None:
            user[key] = value
    mcmc = {k: v for k, v in (("draws", draws), ("tune", tune), ("chains", chains)) if v is not None}
    if mcmc:
        user["mcmc"] = {**(user.get("mcmc") or {}), **mcmc}
    return user


def _print_rfm(result: RfmResult, report: dict[str, Any]) -> None:
    console.print(
        f"[bold]RFM[/] of {report['scored']:,} from {report['source']}, as of {report['as_of']}; "
        f"{report['bins']} bins; high = score above "
        + ("the mean" if report["split"] == "mean" else str(report["split"]))
        + " (R {r:.2f}, F {f:.2f}, M {m:.2f})".format(**report["split_points"]),
        highlight=False,
    )
    if report["not_scored"]:
        console.print(
            f"{report['not_scored']:,} persons have no purchase and are not scored", highlight=False
        )
    print_table(
        "segments",
        ["RFM", "名称", "segment", "count", "share", "recency (days)", "frequency", "monetary"],
        [
            [
                s["pattern"],
                s["zh"],
                s["en"],
                f"{s['count']:,}",
                f"{s['share']:.1%}",
                _num(s["recency_days"], 1),
                _num(s["frequency"], 2),
                _num(s["monetary"], 2),
            ]
            for s in report["segments"]
        ],
    )
    scores = report["scores"]
    print_table(
        "score ranges",
        ["score", "recency (days)", "frequency", "monetary"],
        [
            [
                r["score"],
                _range(r, "recency_days"),
                _range(f, "frequency"),
                _range(m, "monetary"),
            ]
            for r, f, m in zip(scores["r"], scores["f"], scores["m"], strict=True)
        ],
    )
    if "traits" in report:
        console.print(
            "wrote " + ", ".join(f"{k} ({v:,})" for k, v in report["traits"].items()), highlight=False
        )
    if "saved" in report:
        console.print(f"saved as {report['saved']} (`careloop models report {report['saved']}`)")


def _param(v: float) -> str:
    return f"{v:.4f}" if 1e-3 <= abs(v) < 1e5 else f"{v:.4e}"


def _range(row: dict[str, Any], measure: str) -> str:
    lo, hi = row[f"{measure}_min"], row[f"{measure}_max"]
    if lo is None:
        return "—"
    return f"{lo:,.0f}" if lo == hi else f"{lo:,.0f} – {hi:,.0f}"


def _show_clv(run: ClvRun, save: str | None, json: bool) -> None:
    report = dict(run.report)
    if save:
        report["saved"] = save
    if json:
        print_json(report)
        return
    title = {"bgnbd": "BG/NBD", "paretonbd": "Pareto/NBD"}[report["model"]]
    how = "loaded " + report["loaded"] if "loaded" in report else f"{report['method'].upper()} fit"
    console.print(
        f"[bold]{title}[/] ({how}) on {report['source']}: {report['customers']:,} customers, "
        f"observation end {report['observation_end']}, time unit {report['time_unit']}",
        highlight=False,
    )
    if report.get("ignored_after_observation_end"):
        console.print(
            f"{report['ignored_after_observation_end']:,} transactions after the observation end ignored",
            highlight=False,
        )
    rows = [[PARAM_NAMES.get(k, k), _param(v)] for k, v in report["params"].items()]
    if report.get("log_likelihood") is not None:
        rows.append(["log-likelihood", f"{report['log_likelihood']:,.2f}"])
    if "repeat_purchases" in report:
        rows.append(["repeat purchases (observed)", f"{report['repeat_purchases']:,}"])
        rows.append(["repeat purchases (model)", f"{report['expected_repeat_purchases']:,.1f}"])
    print_table(f"{title} parameters", ["parameter", "value"], rows)
    for p, d in (report.get("diagnostics") or {}).items():
        console.print(f"  {p}: r_hat {d['r_hat']}, ess {d['ess_bulk']}", highlight=False)
    spend = report.get("spend")
    if spend:
        srows = [[PARAM_NAMES.get(k, k), _param(v)] for k, v in spend["params"].items()]
        if spend.get("customers") is not None:
            srows.append(["customers (repeat, value > 0)", f"{spend['customers']:,}"])
        if spend.get("mean_spend") is not None:
            srows.append(["mean spend per purchase", f"{spend['mean_spend']:,.2f}"])
        if spend.get("corr_frequency_spend") is not None:
            srows.append(["corr(frequency, spend)", f"{spend['corr_frequency_spend']:.3f}"])
        print_table("Gamma-Gamma parameters", ["parameter", "value"], srows)
        if spend.get("note"):
            console.print(f"[yellow]{spend['note']}[/]", highlight=False)
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    pred = report["predictions"]
    line = (
        f"next {pred['horizon_days']:g} days: {pred['expected_purchases']:,.1f} purchases expected, "
        f"mean P(alive) {_num(pred['mean_p_alive'], 3)}"
    )
    if "value" in pred:
        line += f", value {pred['value']:,.2f}"
        if pred.get("top_decile_value_share") is not None:
            line += f" ({pred['top_decile_value_share']:.0%} from the top 10%)"
    console.print(line, highlight=False)
    if "traits" in report:
        console.print(
            "wrote " + ", ".join(f"{k} ({v['values']:,})" for k, v in report["traits"].items()),
            highlight=False,
        )
    if save:
        console.print(f"saved as {save} (`careloop models report {save}`)")
