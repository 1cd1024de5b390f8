"""Exports (CSV and Excel are the page's table; person-level tables need export:person_level and are
audited), the segment builder (its count is segments.count and the API's preview; explanations; saving)
and the capability self-assessment."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from careloop.console import assessment
from careloop.console.segment_builder import Form, Row, condition, definition, form_of, parse_form
from careloop.console.tables import Col, DataTable, to_csv
from careloop.profiles import segments as seg
from tests.console.conftest import api_headers, table
from tests.console.world import AS_OF, World


def test_csv_and_excel_are_the_pages_table(admin: TestClient) -> None:
    html = admin.get("/console/executive", params={"days": 365}).text
    shown = table(html, "adherence_by_class")
    r = admin.get("/console/export/executive/adherence_by_class.csv", params={"days": 365})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["药物类别", "计算PDC", "PDC≥80%", "依从率"]
    assert [(x[0], int(x[1])) for x in rows[1:]] == [(s["drug_class"], int(s["measured"])) for s in shown]
    x = admin.get("/console/export/executive/adherence_by_class.xlsx", params={"days": 365})
    assert x.status_code == 200
    ws = load_workbook(io.BytesIO(x.content)).active
    assert ws is not None
    cells = [[c.value for c in row] for row in ws.iter_rows()]
    assert cells[0] == rows[0] and [(c[0], c[1]) for c in cells[1:]] == [(a, int(b)) for a, b, *_ in rows[1:]]
    en = admin.get("/console/export/executive/monthly.csv", params={"lang": "en"})
    assert en.content.decode("utf-8-sig").splitlines()[0] == "Month,Active patients,Revenue"
    assert admin.get("/console/export/executive/nope.csv").status_code == 404
    assert admin.get("/console/export/executive/monthly.pdf").status_code == 404


def test_person_level_exports_need_their_permission_and_are_audited(
    as_role: Callable[[str], TestClient], world: World
) -> None:
    path = "/console/export/patient/encounters.csv"
    marketer = as_role("marketer")
    page = marketer.get(f"/console/patients/{world.person}").text
    assert "/console/export/patient/encounters.csv" not in page  # no link without the permission
    assert marketer.get(path, params={"id": world.person}).status_code == 403
    before = world.store.scalar("SELECT count(*) FROM audit_entry WHERE action = 'export'")
    dpo = as_role("dpo")
    assert "/console/export/patient/encounters.csv" in dpo.get(f"/console/patients/{world.person}").text
    r = dpo.get(path, params={"id": world.person})
    assert r.status_code == 200 and len(r.content.decode("utf-8-sig").splitlines()) > 1
    after = world.store.scalar("SELECT count(*) FROM audit_entry WHERE action = 'export'")
    assert after == before + 1
    # aggregate tables: export:aggregate (the medical rep has it; the engineer holds no view with tables of it)
    assert as_role("medical_rep").get("/console/export/executive/monthly.csv").status_code == 200
    assert as_role("reviewer").get("/console/export/executive/monthly.csv").status_code == 403


def test_cells_that_look_like_formulas_are_defused() -> None:
    t = DataTable(
        "x",
        "table.segments",
        [Col("name", "col.name"), Col("n", "col.count", "int")],
        [{"name": "=HYPERLINK(1)", "n": -3}],
    )
    body = to_csv(t, lambda k: k, lambda g, v: str(v)).decode("utf-8-sig")
    assert "'=HYPERLINK(1)" in body and ",-3" in body


def test_builder_form_round_trip() -> None:
    form = parse_form(
        {
            "combine": "any",
            "c0_kind": "trait",
            "c0_trait": "age",
            "c0_op": ">=",
            "c0_value": "65",
            "c1_kind": "event",
            "c1_event": "app_open",
            "c1_op": ">=",
            "c1_count": "2",
            "c1_within": "30d",
            "c2_kind": "trait",
            "c2_trait": "pdc_adherent",
            "c2_key": "*",
            "c2_op": "=",
            "c2_value": "0",
            "c2_not": "1",
            "c3_kind": "segment",
            "c3_segment": "老年",
            "c4_kind": "trait",
            "c4_trait": "age_band",
            "c4_op": "in",
            "c4_value": "45-54, 55-64",
        }
    )
    d = definition(form)
    assert d == {
        "any": [
            {"trait": "age", "op": ">=", "value": 65},
            {"event": "app_open", "op": ">=", "count": 2, "within": "30d"},
            {"not": {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0}},
            {"segment": "老年"},
            {"trait": "age_band", "op": "in", "value": ["45-54", "55-64"]},
        ]
    }
    again = form_of(d)
    assert again is not None and definition(again) == d
    assert definition(Form(rows=[Row()])) is None
    assert condition(Row("trait", trait="visits_90d", op="exists")) == {"trait": "visits_90d", "op": "exists"}


def test_live_count_is_the_librarys_and_the_apis(
    app: FastAPI, as_role: Callable[[str], TestClient], world: World
) -> None:
    data = {"combine": "all", "c0_kind": "trait", "c0_trait": "age", "c0_op": ">=", "c0_value": "65"}
    d = {"trait": "age", "op": ">=", "value": 65}
    expected = seg.count(world.store, d, as_of=AS_OF)
    r = as_role("analyst").post("/console/segments/preview", data=data, headers={"HX-Request": "true"})
    assert r.status_code == 200 and f'data-count="{expected}"' in r.text
    assert "<html" not in r.text  # a fragment for htmx
    api = TestClient(app).post(
        "/v1/segments/preview",
        params={"as_of": AS_OF.isoformat()},
        json=d,
        headers=api_headers(app, "analyst"),
    )
    assert api.status_code == 200 and api.json()["count"] == expected
    # the explanation, for a sample member (the smallest person id the definition holds)
    members = seg.members(world.store, d, as_of=AS_OF)
    assert f"患者 {members[0]} 的判定" in r.text and "在组内" in r.text
    # a role without segments:members gets the count only
    rep = as_role("medical_rep").post("/console/segments/preview", data=data)
    assert (
        f'data-count="{expected}"' in rep.text and "只能查看人数" in rep.text and members[0] not in rep.text
    )
    bad = as_role("analyst").post(
        "/console/segments/preview", data={**data, "c0_op": "between", "c0_value": "1"}
    )
    assert bad.status_code == 200 and "定义有误" in bad.text


def test_prefilled_builder_from_a_drill_down(admin: TestClient, world: World) -> None:
    d = {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0}
    r = admin.get("/console/segments/new", params={"definition": orjson.dumps(d).decode()})
    assert r.status_code == 200 and f'data-count="{seg.count(world.store, d, as_of=AS_OF)}"' in r.text
    assert 'value="pdc_adherent"' in r.text
    edit = admin.get("/console/segments/new", params={"name": "老年"})
    assert edit.status_code == 200 and 'value="老年"' in edit.text


def test_saving_a_segment(as_role: Callable[[str], TestClient], world: World) -> None:
    data = {
        "combine": "all",
        "c0_kind": "trait",
        "c0_trait": "age",
        "c0_op": "between",
        "c0_value": "30, 40",
        "name": "控制台测试",
        "description": "30-40岁",
        "action": "save",
    }
    assert as_role("medical_rep").post("/console/segments/new", data=data).status_code == 403
    r = as_role("marketer").post("/console/segments/new", data=data, follow_redirects=False)
    assert (
        r.status_code == 303
        and r.headers["location"] == "/console/segments/" + quote("控制台测试") + "?saved=1"
    )
    saved = seg.get_segment(world.store, "控制台测试")
    assert saved.definition == {"trait": "age", "op": "between", "value": [30, 40]}
    nameless = as_role("marketer").post("/console/segments/new", data={**data, "name": ""})
    assert nameless.status_code == 400
    added = as_role("marketer").post("/console/segments/new", data={**data, "action": "add"})
    assert added.status_code == 200 and 'name="c1_kind"' in added.text


def test_capability_self_assessment(as_role: Callable[[str], TestClient], world: World) -> None:
    client = as_role("reviewer")  # any signed-in user
    answers = {q: "4" for q in assessment.QUESTIONS}
    incomplete = client.post("/console/assessment", data={"title": "半份", **dict(list(answers.items())[:3])})
    assert incomplete.status_code == 400 and "回答全部问题" in incomplete.text
    world.clock.advance(timedelta(minutes=1))
    r = client.post("/console/assessment", data={"title": "第二次自评", **answers}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and 'id="chart-radar"' in page.text
    assert page.text.count('data-value="4.0"') == len(assessment.DIMENSIONS)
    assert "对比：之江医院 2026" in page.text  # the one before it
    history = assessment.history(world.store)
    assert history[0]["title"] == "第二次自评" and history[0]["created_by"] == "c-reviewer"
    assert history[0]["scores"] == {d.id: 4.0 for d in assessment.DIMENSIONS}
    with pytest.raises(Exception, match="levels 1-5"):
        assessment.score({**{q: 4 for q in assessment.QUESTIONS}, "px1": 9})
