"""The condition language (with explanations) and tags applied from stored traits on each backend."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from typer.testing import CliRunner

from careloop.errors import ConfigError
from careloop.profiles.conditions import evaluate, parse
from careloop.profiles.tags import apply_tags, load_tags, person_tags
from careloop.storage import Backend

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 10, 31)
TRAITS = {
    ("age", ""): 67.0,
    ("age_band", ""): "65-74",
    ("pdc_adherent", "statin"): 1.0,
    ("pdc_adherent", "ARB"): 0.0,
    ("last_visit_at", ""): datetime(2026, 6, 1, 9, tzinfo=TZ),
    ("pdc_run_out", "statin"): datetime(2026, 11, 3, tzinfo=TZ),
}


def holds(spec: dict[str, object]) -> bool:
    return evaluate(parse(spec), TRAITS, DAY, TZ).holds


def test_comparisons_keys_defaults_and_relative_dates() -> None:
    assert holds({"trait": "age", "op": ">=", "value": 65})
    assert not holds({"trait": "age", "op": "<", "value": 14})
    assert holds({"trait": "age_band", "op": "in", "value": ["55-64", "65-74"]})
    assert holds({"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0})  # some class is not adherent
    assert not holds({"trait": "pdc_adherent", "key": "statin", "op": "=", "value": 0})
    assert not holds({"trait": "visits_90d", "op": "=", "value": 0})  # missing fails ...
    assert holds({"trait": "visits_90d", "op": "=", "value": 0, "default": 0})  # ... unless defaulted
    assert holds({"trait": "visits_90d", "op": "missing"})
    assert holds({"trait": "last_visit_at", "op": "<", "value": "-90d"})
    assert holds({"trait": "pdc_run_out", "key": "*", "op": "between", "value": ["-1d", "+7d"]})
    assert holds({"trait": "last_visit_at", "op": ">", "value": "2026-05-31"})
    assert not holds({"trait": "age", "op": ">", "value": "-90d"})  # a number against a date: no
    tree = {"all": [{"trait": "age", "op": ">=", "value": 65}, {"not": {"trait": "pdc", "op": "exists"}}]}
    verdict = evaluate(parse(tree), TRAITS, DAY, TZ)
    assert verdict.holds and verdict.as_dict()["because"][0] == {
        "holds": True,
        "condition": "age >= 65",
        "seen": 67.0,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "a condition is a mapping"),
        ({"all": []}, "non-empty list"),
        ({"all": [{"trait": "age", "op": ">", "value": 1}], "any": []}, "stands alone"),
        ({"trait": "age", "op": "~", "value": 1}, "`op` is one of"),
        ({"trait": "age", "op": "in", "value": 3}, "needs a list"),
        ({"trait": "age", "op": "between", "value": [1]}, "low, high"),
        ({"trait": "age", "op": ">"}, "needs a value"),
        ({"trait": "age", "op": ">", "value": 1, "sql": "1=1"}, "unknown field"),
    ],
)
def test_bad_conditions_say_what_is_wrong(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(spec)


def test_tags_from_stored_traits_with_evidence(backend: Backend) -> None:
    store = backend.workspace("default")
    store.insert("person", [{"person_id": p} for p in ("P1", "P2", "P3")])
    at = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)

    def tv(
        p: str, trait: str, key: str = "", num: float | None = None, text: str | None = None
    ) -> dict[str, object]:
        return {"person_id": p, "trait": trait, "key": key, "value_num": num, "value_text": text, "as_of": at}

    store.insert(
        "trait_value",
        [
            tv("P1", "age", num=70),
            tv("P1", "pdc_adherent", "ARB", num=0),
            tv("P1", "pdc_adherent", "statin", num=1),
            tv("P2", "age", num=50),
            tv("P2", "pdc_adherent", "statin", num=1),
            tv("P3", "age", num=8),
        ],
    )
    summary = apply_tags(store, as_of=DAY)
    assert summary.persons == 3 and summary.per_tag["老年"] == 1 and summary.per_tag["依从性差"] == 1
    tags = {p: {r["tag"] for r in person_tags(store, p)} for p in ("P1", "P2", "P3")}
    assert tags == {"P1": {"老年", "依从性差"}, "P2": {"慢病管理年龄段", "依从性好"}, "P3": {"儿童"}}
    poor = next(r for r in person_tags(store, "P1") if r["tag"] == "依从性差")
    assert poor["tagset_version"] == 1 and poor["rule"] == "pdc_adherent[*] = 0"
    assert poor["evidence"]["seen"] == {"ARB": 0.0, "statin": 1.0}
    apply_tags(store, as_of=DAY)  # re-applying replaces
    assert store.count("person_tag") == 5


def test_tag_definitions_and_cli(tmp_path: Path) -> None:
    bad = tmp_path / "tags.yaml"
    bad.write_text("tags: {x: {when: {trait: age, op: '>', value: 1}}}", encoding="utf-8")
    with pytest.raises(ConfigError, match="version"):
        load_tags(bad)
    from careloop.cli import app

    runner = CliRunner()
    listed = orjson.loads(runner.invoke(app, ["tags", "list", "--json"]).stdout)
    assert {"tag": "老年", "en": "older adult (65+)", "rule": "age >= 65"} in listed["tags"]
    out = orjson.loads(runner.invoke(app, ["tags", "apply", "--json"]).stdout)
    assert out["persons"] == 0
    r = runner.invoke(app, ["tags", "show", "P404"])
    assert r.exit_code == 1 and "no person" in r.output
