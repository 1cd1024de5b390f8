"""`careloop models churn | noshow | refill ...` and `careloop models highvalue`: risk models and the
high-value profile on the store (docs/models.md).

`fit` runs the time-split backtest, prints its figures and saves the model with its report
(`careloop models report NAME`); `score` scores as of a day and writes the scores as traits.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")
ConfigOpt = typer.Option(
    None, "--config", help="YAML settings merged over the family's defaults (docs/models.md)"
)
TrainOpt = typer.Option(
    None,
    "--train-cutoff",
    help="training cut-off day (repeat for stacked snapshots; default: from the test cut-off)",
)
TestOpt = typer.Option(
    None, "--test-cutoff", help="test cut-off day (default: the last day of data − the horizon)"
)
AsOfOpt = typer.Option(None, "--as-of", help="score as of this day (default: today)")
WriteOpt = typer.Option(
    True, "--write/--no-write", help="write the scores as traits (default) or only print them"
)
TopOpt = typer.Option(20, "--top", help="how many of the highest risks to print")


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date like 2026-10-31, not {text!r}") from None


def _days(texts: list[str] | None, option: str) -> list[date] | None:
    return [d for t in texts if (d := _day(t, option))] if texts else None


def _config(path: Path | None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        if not path.exists():
            raise ConfigError(f"--config {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings (see docs/models.md)")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _accuracy(report: dict[str, Any]) -> str:
    """The backtest's AUC against recency only, for score headers (a weak model says so)."""
    return f"backtest AUC {report.get('auc')} vs {report.get('baseline_auc')} for recency only"


def _print_fit(report: dict[str, Any], name: str) -> None:
    scalars = [[k, _fmt(v)] for k, v in report.items() if not isinstance(v, list | dict)]
    print_table(f"{name}: backtest", ["figure", "value"], scalars)
    print_table(
        "models on the test window (same run)",
        ["model", "AUC", "PR-AUC", "Brier", "ECE"],
        [
            [m["model"], _fmt(m["auc"]), _fmt(m["pr_auc"]), _fmt(m["brier"]), _fmt(m["ece"])]
            for m in report["models"]
        ],
    )
    print_table(
        "drivers (mean |SHAP|, test window)",
        ["feature", "特征", "share", "direction"],
        [[d["en"], d["zh"], f"{d['share']:.1%}", d["direction"]] for d in report["drivers"][:10]],
    )
    print_table(
        "lift by decile",
        ["decile", "n", "rate", "lift", "captured"],
        [
            [r["decile"], r["n"], f"{r['rate']:.1%}", f"{r['lift']:.2f}", f"{r['cumulative_capture']:.0%}"]
            for r in report["lift"]
        ],
    )
    console.print(f"saved as [bold]{name}[/]; `careloop models report {name}` shows the full report")


def _save_fitted(store: Any, card: Any, model: Any) -> None:
    """Save a fitted model and record the fit in the audit chain (person-level data was read)."""
    from careloop.models.runs import save_fitted

    save_fitted(store, card, model)


def _scored(store: Any, name: str, family: str, scored: int, written: dict[str, Any] | None) -> None:
    """Record a scoring run in the audit chain (how many were scored, which traits were written)."""
    from careloop.models.runs import record_scores

    record_scores(store, model=name, family=family, persons=scored, traits=written)


def register(models: typer.Typer) -> None:
    churn_app = typer.Typer(
        help="Churn (lapse) risk of chronic patients, with reasons.", no_args_is_help=True
    )
    noshow_app = typer.Typer(help="No-show risk of booked appointments, with reasons.", no_args_is_help=True)
    refill_app = typer.Typer(
        help="Run-out dates and late-refill risk per patient and drug class.", no_args_is_help=True
    )

    @churn_app.command("fit")
    @handle_errors
    def churn_fit(
        name: str = typer.Option("churn", "--name", help="save the model under this name"),
        train_cutoff: list[str] | None = TrainOpt,
        test_cutoff: str | None = TestOpt,
        horizon: int | None = typer.Option(None, "--horizon", help="label window in days (default 90)"),
        grace: int | None = typer.Option(
            None, "--grace", help="days a refill may be late before it is a lapse (30)"
        ),
        config: Path | None = ConfigOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Backtest (train on earlier cut-offs, test on a later one) and save the churn model."""
        from careloop.models import churn

        user = _config(config, horizon_days=horizon, grace_days=grace)
        ws = workspace_name(workspace)
        with open_backend() as backend:
            card, model = churn.fit(
                backend.workspace(ws),
                name,
                train_cutoffs=_days(train_cutoff, "--train-cutoff"),
                test_cutoff=_day(test_cutoff, "--test-cutoff"),
                config=user,
                clock=backend.clock,
            )
            _save_fitted(backend.workspace(ws), card, model)
        if json:
            print_json(card.as_dict())
            return
        _print_fit(card.report, name)

    @churn_app.command("score")
    @handle_errors
    def churn_score(
        name: str = typer.Option("churn", "--name", help="the saved model (`careloop models list`)"),
        as_of: str | None = AsOfOpt,
        write: bool = WriteOpt,
        top: int = TopOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Score the chronic patients whose refill falls due within the horizon; write churn_risk,
        churn_reasons (key = rank), churn_due and the early-warning signal traits."""
        from careloop.models import churn
        from careloop.models.base import registry
        from careloop.models.risk_features import from_day

        ws = workspace_name(workspace)
        card, model = registry(ws).load(name, family=churn.FAMILY, family_version=churn.VERSION)
        with open_backend() as backend:
            store = backend.workspace(ws)
            scores, act, t = churn.score(store, model, as_of=_day(as_of, "--as-of"), clock=backend.clock)
            written = churn.write(store, scores, act, t, clock=backend.clock) if write else None
            _scored(store, name, churn.FAMILY, len(scores), written)
        ranked = sorted(scores, key=lambda s: -s.risk)
        out = {
            "model": name,
            "as_of": from_day(t).isoformat(),
            "scored": len(scores),
            "traits": written,
            "top": [
                {
                    "person_id": s.person_id,
                    "risk": round(s.risk, 4),
                    "due": s.due,
                    "reasons": [r.as_dict() for r in s.reasons],
                }
                for s in ranked[:top]
            ],
        }
        if json:
            print_json(out)
            return
        console.print(
            f"{len(scores):,} patients scored as of {out['as_of']} by {name} ({_accuracy(card.report)})"
        )
        print_table(
            f"highest churn risk (top {top})",
            ["person", "risk", "refill due", "reasons"],
            [
                [s.person_id, f"{s.risk:.0%}", s.due, "\n".join(r.text for r in s.reasons)]
                for s in ranked[:top]
            ],
        )
        if written:
            console.print("traits written: " + ", ".join(f"{k} ({v:,})" for k, v in written.items()))

    @noshow_app.command("fit")
    @handle_errors
    def noshow_fit(
        name: str = typer.Option("noshow", "--name", help="save the model under this name"),
        split: str | None = typer.Option(
            None, "--split", help="first day of the test window (default: last outcome − test days)"
        ),
        train_days: int | None = typer.Option(
            None, "--train-days", help="training window before the split (365)"
        ),
        test_days: int | None = typer.Option(None, "--test-days", help="test window from the split (90)"),
        config: Path | None = ConfigOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Backtest (train on appointments before the split, test after it) and save the no-show model."""
        from careloop.models import noshow

        user = _config(config, train_days=train_days, test_days=test_days)
        ws = workspace_name(workspace)
        with open_backend() as backend:
            card, model = noshow.fit(
                backend.workspace(ws), name, split=_day(split, "--split"), config=user, clock=backend.clock
            )
            _save_fitted(backend.workspace(ws), card, model)
        if json:
            print_json(card.as_dict())
            return
        _print_fit(card.report, name)

    @noshow_app.command("score")
    @handle_errors
    def noshow_score(
        name: str = typer.Option("noshow", "--name", help="the saved model (`careloop models list`)"),
        as_of: str | None = AsOfOpt,
        write: bool = WriteOpt,
        top: int = TopOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Score every booked appointment after the as-of day; write noshow_risk, noshow_reasons and
        noshow_next_at for each person's next appointment."""
        from zoneinfo import ZoneInfo

        from careloop.config import get_settings
        from careloop.models import noshow
        from careloop.models.base import registry

        ws = workspace_name(workspace)
        card, model = registry(ws).load(name, family=noshow.FAMILY, family_version=noshow.VERSION)
        with open_backend() as backend:
            store = backend.workspace(ws)
            clock = backend.clock
            day = _day(as_of, "--as-of") or clock.now().astimezone(ZoneInfo(get_settings().timezone)).date()
            scores = noshow.score(store, model, as_of=day, clock=clock)
            written = noshow.write(store, scores, day, clock=clock) if write else None
            _scored(store, name, noshow.FAMILY, len(scores), written)
        ranked = sorted(scores, key=lambda s: -s.risk)
        out = {
            "model": name,
            "as_of": day.isoformat(),
            "appointments": len(scores),
            "traits": written,
            "top": [
                {
                    "appointment": s.appointment,
                    "person_id": s.person_id,
                    "scheduled_at": s.scheduled_at,
                    "risk": round(s.risk, 4),
                    "reasons": [r.as_dict() for r in s.reasons],
                }
                for s in ranked[:top]
            ],
        }
        if json:
            print_json(out)
            return
        console.print(
            f"{len(scores):,} booked appointments scored as of {day} by {name} ({_accuracy(card.report)})"
        )
        print_table(
            f"highest no-show risk (top {top})",
            ["appointment", "person", "when", "risk", "reasons"],
            [
                [
                    s.appointment,
                    s.person_id,
                    f"{s.scheduled_at:%Y-%m-%d %H:%M}",
                    f"{s.risk:.0%}",
                    "\n".join(r.text for r in s.reasons),
                ]
                for s in ranked[:top]
            ],
        )
        if written:
            console.print("traits written: " + ", ".join(f"{k} ({v:,})" for k, v in written.items()))

    @refill_app.command("fit")
    @handle_errors
    def refill_fit(
        name: str = typer.Option("refill", "--name", help="save the model under this name"),
        train_cutoff: list[str] | None = TrainOpt,
        test_cutoff: str | None = TestOpt,
        due_days: int | None = typer.Option(
            None, "--due-days", help="classes running out within N days of the cut-off (30)"
        ),
        late_days: int | None = typer.Option(
            None, "--late-days", help="days after the run-out a refill counts as late (7)"
        ),
        config: Path | None = ConfigOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Backtest and save the late-refill model."""
        from careloop.models import refill

        user = _config(config, due_days=due_days, late_days=late_days)
        ws = workspace_name(workspace)
        with open_backend() as backend:
            card, model = refill.fit(
                backend.workspace(ws),
                name,
                train_cutoffs=_days(train_cutoff, "--train-cutoff"),
                test_cutoff=_day(test_cutoff, "--test-cutoff"),
                config=user,
                clock=backend.clock,
            )
            _save_fitted(backend.workspace(ws), card, model)
        if json:
            print_json(card.as_dict())
            return
        _print_fit(card.report, name)

    @refill_app.command("score")
    @handle_errors
    def refill_score(
        name: str = typer.Option("refill", "--name", help="the saved model (`careloop models list`)"),
        as_of: str | None = AsOfOpt,
        write: bool = WriteOpt,
        top: int = TopOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Run-out date of every current (patient, drug class) and the late-refill risk of those due soon;
        write refill_run_out, refill_late_risk and refill_late_reasons (keyed by drug class)."""
        from zoneinfo import ZoneInfo

        from careloop.config import get_settings
        from careloop.models import refill
        from careloop.models.base import registry

        ws = workspace_name(workspace)
        card, model = registry(ws).load(name, family=refill.FAMILY, family_version=refill.VERSION)
        with open_backend() as backend:
            store = backend.workspace(ws)
            day = (
                _day(as_of, "--as-of")
                or backend.clock.now().astimezone(ZoneInfo(get_settings().timezone)).date()
            )
            scores = refill.score(store, model, as_of=day, clock=backend.clock)
            written = refill.write(store, scores, day, clock=backend.clock) if write else None
            _scored(store, name, refill.FAMILY, len(scores), written)
        due = sorted((s for s in scores if s.late_risk is not None), key=lambda s: -(s.late_risk or 0.0))
        out = {
            "model": name,
            "as_of": day.isoformat(),
            "classes": len(scores),
            "due_soon": len(due),
            "traits": written,
            "top": [
                {
                    "person_id": s.person_id,
                    "drug_class": s.drug_class,
                    "run_out": s.run_out,
                    "expected_refill": s.expected_refill,
                    "late_risk": round(s.late_risk or 0.0, 4),
                    "reasons": [r.as_dict() for r in s.reasons],
                }
                for s in due[:top]
            ],
        }
        if json:
            print_json(out)
            return
        console.print(
            f"{len(scores):,} current patient × drug classes as of {day}; {len(due):,} run out within "
            f"{model.config['due_days']} days ({_accuracy(card.report)})"
        )
        print_table(
            f"highest late-refill risk (top {top})",
            ["person", "drug class", "runs out", "expected refill", "risk", "reasons"],
            [
                [
                    s.person_id,
                    s.drug_class,
                    s.run_out,
                    s.expected_refill or "",
                    f"{s.late_risk or 0:.0%}",
                    "\n".join(r.text for r in s.reasons),
                ]
                for s in due[:top]
            ],
        )
        if written:
            console.print("traits written: " + ", ".join(f"{k} ({v:,})" for k, v in written.items()))

    @models.command("highvalue")
    @handle_errors
    def highvalue_cmd(
        value_trait: str | None = typer.Option(
            None, "--value-trait", help="default: clv_value, else spend_365d"
        ),
        top_share: float | None = typer.Option(
            None, "--top-share", help="share of persons that is high-value (0.2)"
        ),
        min_support: int | None = typer.Option(
            None, "--min-support", help="least high-value persons per condition (20)"
        ),
        save: str = typer.Option("highvalue", "--save", help="keep the profile under this name"),
        config: Path | None = ConfigOpt,
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """What distinguishes the high-value patients: stored traits with lift (after `careloop traits compute`)."""
        from careloop.models import highvalue

        user = _config(config, value_trait=value_trait, top_share=top_share, min_support=min_support)
        ws = workspace_name(workspace)
        with open_backend() as backend:
            store = backend.workspace(ws)
            card, conditions = highvalue.profile(store, user, name=save, clock=backend.clock)
            _save_fitted(store, card, [c.as_dict() for c in conditions])
        r = card.report
        if json:
            print_json(card.as_dict())
            return
        console.print(
            f"high value = top {r['top_share']:.0%} by {r['value_trait']} (>= {r['value_threshold']:,}): "
            f"{r['high_value_persons']:,} of {r['persons']:,} persons hold {r['high_value_share_of_value']:.0%} of the value"
        )
        cols = ["condition", "high-value", "share high", "share all", "lift", "p"]
        for title in ("acquisition", "behaviour"):
            print_table(
                f"{title}: conditions with the highest lift",
                cols,
                [
                    [
                        c["condition"],
                        c["high_value_persons"],
                        f"{c['share_high']:.1%}",
                        f"{c['share_all']:.1%}",
                        f"{c['lift']:.2f}",
                        c["p_value"],
                    ]
                    for c in r[title][:15]
                ],
            )
        console.print(f"saved as [bold]{save}[/]; `careloop models report {save}` shows it again")

    models.add_typer(churn_app, name="churn")
    models.add_typer(noshow_app, name="noshow")
    models.add_typer(refill_app, name="refill")
