"""Safe export: k-anonymity on aggregate exports, recorded purposes on person-level ones."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.privacy.export import aggregate, check_purpose, write_aggregate
from careloop.storage import Backend


def _persons(backend: Backend) -> None:
    s = backend.workspace("default")
    rows = []
    # 12 women 30-44 in Hangzhou, 3 men 60-74 in Hangzhou, 10 women 30-44 in Ningbo
    for i in range(12):
        rows.append({"person_id": f"A{i}", "sex": "female", "city": "杭州市", "birth_date": date(1990, 1, 1)})
    for i in range(3):
        rows.append({"person_id": f"B{i}", "sex": "male", "city": "杭州市", "birth_date": date(1960, 1, 1)})
    for i in range(10):
        rows.append({"person_id": f"C{i}", "sex": "female", "city": "宁波市", "birth_date": date(1985, 6, 1)})
    s.insert("person", rows)
    s.insert(
        "trait_value",
        [{"person_id": r["person_id"], "trait": "visits_365d", "key": "", "value_num": 2.0} for r in rows],
    )


def test_small_cells_are_suppressed(backend: Backend, clock: FixedClock, tmp_path: Path) -> None:
    _persons(backend)
    store = backend.workspace("default")
    out = aggregate(store, ["age_band", "sex", "city"], "count", k=10, clock=clock)
    cells = {(r["age_band"], r["sex"], r["city"]): r["persons"] for r in out["rows"]}
    assert cells == {
        ("30-44", "female", "杭州市"): 12,
        ("60-74", "male", "杭州市"): "<10",
        ("30-44", "female", "宁波市"): 10,
    }
    assert out["suppressed"] == 1
    strict = aggregate(store, ["sex"], "mean:visits_365d", k=11, clock=clock)
    by_sex = {r["sex"]: r for r in strict["rows"]}
    assert by_sex["female"]["mean_visits_365d"] == 2.0 and by_sex["male"]["mean_visits_365d"] == "<11"
    f = tmp_path / "agg.csv"
    write_aggregate(out, f)
    text = list(csv.DictReader(f.open(encoding="utf-8")))
    assert {"age_band": "60-74", "sex": "male", "city": "杭州市", "persons": "<10"} in text


def test_bad_dimensions_and_purposes_are_refused(backend: Backend, clock: FixedClock) -> None:
    store = backend.workspace("default")
    with pytest.raises(ConfigError, match="unknown dimension"):
        aggregate(store, ["no_such_trait"], clock=clock)
    with pytest.raises(ConfigError, match="measure"):
        aggregate(store, ["sex"], "median:x", clock=clock)
    with pytest.raises(ConfigError, match="purpose"):
        check_purpose("")
    assert check_purpose(" care follow-up ") == "care follow-up"
