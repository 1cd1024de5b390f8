"""``risk``: churn model training and scoring time on the synthetic network, embedded DuckDB.

The network is generated (or reused from the cache) and ingested once into
``CACHE/risk-N-SEED/store.duckdb``; identity is linked from the planted truth (`link_from_truth`, as the
``patient360`` scenario does — this scenario measures the models, not the resolver). The store is read
once (`load_activity`, timed as a detail), then:

- **models-churn-fit**: careloop's whole churn fit — point-in-time feature tables at the three training
  cut-offs and the test cut-off, 5-fold CV for the number of rounds, LightGBM, the calibrator, the two
  baselines and the backtest report (horizon 30 days, grace 10, snapshots 15 days apart: the setting
  the synthetic network's planted churn needs, docs/models.md). Baseline in the same run: scikit-learn's
  ``HistGradientBoostingClassifier`` (default settings) fitted on the same training table, already
  built — the bare learner, without feature building, CV, calibration or report.
- **models-churn-score**: careloop's scoring as of the last day — the feature table, calibrated
  probabilities and TreeSHAP reason codes for every patient in the population. Baseline: the same
  scikit-learn model's ``predict_proba`` on the same, already built table.

Figures are seconds (lower is better), the best of `repeat` runs; the ratio is careloop / baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from careloop.bench.report import BenchResult
from careloop.config import Settings
from careloop.models import churn
from careloop.models.risk_features import Activity, from_day, load_activity
from careloop.storage import connect

WORKSPACE = "bench"
CONFIG: dict[str, Any] = {"horizon_days": 30, "grace_days": 10, "snapshot_step_days": 15}


def prepare(patients: int, seed: int, cache: Path, settings: Settings) -> Path:
    """The store of that network, ingested and linked once."""
    from careloop.bench.patient360_bench import link_from_truth
    from careloop.bench.scenarios import network
    from careloop.ingest.pipeline import Ingestor

    root = network(cache, patients, seed)
    db = cache / f"risk-{patients}-{seed}" / "store.duckdb"
    done = db.with_suffix(".ready")
    if not done.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.exists():
            db.unlink()
        backend = connect(f"duckdb:///{db}")
        try:
            Ingestor(backend, WORKSPACE, settings=settings).ingest(root, "parquet")
            link_from_truth(backend.workspace(WORKSPACE), root, backend.clock)
            backend.execute("CHECKPOINT")
        finally:
            backend.close()
        done.write_text("ok\n", encoding="utf-8")
    return db


def _baseline_fit(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> tuple[Any, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    started = time.perf_counter()
    model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    return model, time.perf_counter() - started


def bench_risk(patients: int, seed: int, cache: Path, settings: Settings, repeat: int) -> list[BenchResult]:
    db = prepare(patients, seed, cache, settings)
    backend = connect(f"duckdb:///{db}")
    try:
        store = backend.workspace(WORKSPACE)
        started = time.perf_counter()
        act: Activity = load_activity(store, settings.timezone)
        read_s = time.perf_counter() - started
        best = {
            "fit": float("inf"),
            "fit_base": float("inf"),
            "score": float("inf"),
            "score_base": float("inf"),
        }
        details: dict[str, object] = {}
        for _ in range(repeat):
            act.clear_cache()
            started = time.perf_counter()
            card, model = churn.fit(store, config=CONFIG, activity=act)
            best["fit"] = min(best["fit"], time.perf_counter() - started)
            t1s, _ = churn.windows(act, model.config, None, None)
            parts = [churn.table(act, t, model.config) for t in t1s]
            x = np.vstack([p.frame.values for p in parts])
            y = np.concatenate([p.y for p in parts if p.y is not None])
            base, base_s = _baseline_fit(x, y)
            best["fit_base"] = min(best["fit_base"], base_s)

            act.clear_cache()
            started = time.perf_counter()
            scores, _, t = churn.score(store, model, as_of=from_day(act.data_end), activity=act)
            best["score"] = min(best["score"], time.perf_counter() - started)
            table = churn.table(act, t, model.config, labels=False)
            started = time.perf_counter()
            base.predict_proba(table.frame.values)
            best["score_base"] = min(best["score_base"], time.perf_counter() - started)
            details = {
                "store_read_s": round(read_s, 3),
                "train_rows": card.report["train_rows"],
                "test_rows": card.report["test_rows"],
                "scored": len(scores),
                "auc": card.report["auc"],
                "baseline_auc_recency": card.report["baseline_auc"],
                "rounds": card.report["rounds"],
                "lightgbm_threads": model.config["fit"]["threads"],
            }
    finally:
        backend.close()
    command = f"careloop bench risk --patients {patients}" + (f" --repeat {repeat}" if repeat > 1 else "")
    size = f"{patients:,} patients ({details['train_rows']:,} training rows)"
    return [
        BenchResult(
            scenario="models-churn-fit",
            size=size,
            figure=best["fit"],
            baseline=best["fit_base"],
            unit="s",
            baseline_name="scikit-learn HistGradientBoosting fit on the same, prebuilt training table",
            command=command,
            details=details,
            note=f"backtest incl. features, CV, calibration; store read {read_s:.1f} s more",
        ),
        BenchResult(
            scenario="models-churn-score",
            size=f"{patients:,} patients ({details['scored']:,} scored)",
            figure=best["score"],
            baseline=best["score_base"],
            unit="s",
            baseline_name="scikit-learn predict_proba on the same, prebuilt table",
            command=command,
            details=details,
            note="features + calibrated risk + reason codes",
        ),
    ]
