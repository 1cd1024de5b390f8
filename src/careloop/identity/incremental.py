"""Full or incremental resolution: which one a run can do.

An incremental run matches only the records not linked yet, against the existing persons and each
other, with the model the last full run trained (`identity_run.model`). It is chosen when:

- a full run exists (with a trained model, when the model is used) and the rules (and threshold) are the same as the last run's;
- the records already linked are exactly those the last run saw: same count and same content hash
  (a sum of the rows' `_row_hash` over patients and their identifiers), so nothing but new records
  arrived. A changed or deleted record, or a changed identifier, needs a full run.

`--full` forces a full run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from careloop.identity.rules import ResolutionRules
from careloop.storage.workspace import WorkspaceStore

#: the modulus of the content hash sum (keeps the sum inside BIGINT at any size)
_MOD = 1_000_000_007


@dataclass
class ModeDecision:
    mode: str  # full | incremental
    reason: str
    model: dict[str, Any] | None = None
    sequence: int = 1


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    return orjson.loads(value)


def fingerprint(store: WorkspaceStore, *, linked_only: bool = False) -> dict[str, int]:
    """Count and content hash of the patient records (and their identifiers), or of the linked ones."""
    join = " JOIN identity_link l ON l.source = p.source AND l.patient_key = p.{key}" if linked_only else ""
    rec = store.rows(
        f"SELECT count(*) AS n, sum(p._row_hash % {_MOD}) AS h FROM patient p" + join.format(key="key")  # noqa: S608
    )[0]
    ids = store.rows(
        f"SELECT count(*) AS n, sum(p._row_hash % {_MOD}) AS h FROM patient_identifier p"  # noqa: S608
        + join.format(key="patient_key")
    )[0]
    return {
        "records": int(rec["n"] or 0),
        "records_hash": int(rec["h"] or 0),
        "identifiers": int(ids["n"] or 0),
        "identifiers_hash": int(ids["h"] or 0),
    }


def runs(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Resolution runs, oldest first (by the sequence number each run records)."""
    rows = store.rows(
        "SELECT run_id, mode, started_at, finished_at, settings, model, summary FROM identity_run"
    )
    for r in rows:
        r["settings"] = _json(r["settings"]) or {}
        r["summary"] = _json(r["summary"]) or {}
    rows.sort(key=lambda r: (int(r["settings"].get("sequence", 0)), str(r["started_at"]), r["run_id"]))
    return rows


def choose_mode(
    store: WorkspaceStore, rules: ResolutionRules, n_records: int, n_links: int, *, force_full: bool
) -> ModeDecision:
    """Decide between a full and an incremental run (see the module docstring)."""
    history = runs(store)
    sequence = int(history[-1]["settings"].get("sequence", 0)) + 1 if history else 1
    if force_full:
        return ModeDecision("full", "--full", sequence=sequence)
    if not history:
        return ModeDecision("full", "no previous run", sequence=sequence)
    fulls = [
        r for r in history if r["mode"] == "full" and (r["model"] is not None or not rules.probabilistic)
    ]
    if not fulls:
        return ModeDecision("full", "no previous full run with a trained model", sequence=sequence)
    last = history[-1]
    settings = {k: v for k, v in last["settings"].items() if k not in ("records_fingerprint", "sequence")}
    if settings != rules.as_settings():
        return ModeDecision("full", "the rules or threshold changed since the last run", sequence=sequence)
    if fingerprint(store, linked_only=True) != last["settings"].get("records_fingerprint"):
        return ModeDecision(
            "full", "records the last run linked were changed or removed since", sequence=sequence
        )
    model = _json(fulls[-1]["model"]) if rules.probabilistic else None
    reason = "no new records" if n_records == n_links else f"{n_records - n_links} new records"
    return ModeDecision("incremental", reason, model=model, sequence=sequence)
