"""Deny by default, route × role: every route of the app is walked; each declares a permission or why it is
public; each role gets 401 (anonymous), 403 (permission missing) or the route's answer, as the roles table
says. A marketer never receives a full phone or ID number from any route; an analyst sees no identifier."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import fastapi.routing
import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from careloop.api import create_app
from careloop.api.security import Public, Requires
from careloop.ingest.pipeline import Ingestor
from careloop.journeys.engine import save_journey, set_status
from careloop.messaging.content import move, save_content
from careloop.patients import PatientView, Viewer, Visibility
from careloop.privacy.auth import add_user
from careloop.privacy.fields import mask
from careloop.privacy.roles import ROLES
from careloop.profiles import segments as seg
from careloop.profiles.personas import build_personas
from careloop.profiles.traits import compute_traits
from careloop.storage import Backend, WorkspaceStore
from tests.patients.conftest import Linked, make_linked, make_network

AS_OF = date(2026, 10, 31)
PASSWORD = "a long test password"
#: non-FastAPI routes: the OpenAPI document and its viewers (no data)
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
FULL_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:\+?86)?1[3-9]\d{9}(?![0-9])")
FULL_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")


def every_route(app: FastAPI) -> Iterator[tuple[Any, str]]:
    """(route, path template) of every route, through included routers."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # FastAPI without included-router contexts: app.routes is flat
        for r in app.routes:
            yield r, r.path
        return
    for ctx in contexts(app.routes):
        yield ctx.original_route, ctx.path_format


def guard(route: APIRoute) -> Any:
    """The route's guard, searched through sub-dependencies: a permission dependency (the API's `Requires`,
    or another surface's own, e.g. the console's session guard: anything with a ``permission``) or a
    public marker (anything with a ``reason``: `Public`, the console's `ConsolePublic`)."""
    stack = list(route.dependant.dependencies)
    while stack:
        d = stack.pop()
        if (
            isinstance(d.call, Requires | Public)
            or hasattr(d.call, "permission")
            or hasattr(d.call, "reason")
        ):
            return d.call
        stack.extend(d.dependencies)
    return None


@dataclass
class Req:
    path_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    ok: int = 200


@dataclass
class World:
    backend: Backend
    store: WorkspaceStore
    person: str
    phone: str  # the person's phone, clear
    id_number: str
    qid: str
    counter: Iterator[int] = field(default_factory=itertools.count)


def _content_version(w: World, *, submitted: bool) -> int:
    n = next(w.counter)
    item = save_content(w.store, "matrix", kind="outbox", body={"zh": f"您好 {n}"}, purpose="service")
    if submitted:
        move(w.store, "matrix", item.version, "submit", by="test")
    return item.version


def _task(w: World) -> str:
    tid = f"t{next(w.counter)}"
    now = w.backend.clock.now()
    w.store.insert(
        "staff_task",
        [
            {
                "task_id": tid,
                "journey": "hello",
                "person_id": w.person,
                "kind": "call",
                "title": "call",
                "status": "open",
                "due_at": now,
                "created_at": now,
            }
        ],
    )
    return tid


SEGMENT = {"trait": "age", "op": ">=", "value": 65}
JOURNEY = {
    "trigger": {"type": "api"},
    "holdout": False,
    "start": "s",
    "nodes": {"s": {"type": "send", "channel": "outbox", "content": "hi", "purpose": "service"}},
}
#: (method, path) -> a request that succeeds for a role holding the permission
SAMPLES: dict[tuple[str, str], Callable[[World], Req]] = {
    ("GET", "/"): lambda w: Req(ok=307),
    ("GET", "/health"): lambda w: Req(),
    ("GET", "/ready"): lambda w: Req(),
    ("GET", "/metrics"): lambda w: Req(),
    ("GET", "/v1/schema"): lambda w: Req(),
    ("GET", "/v1/schema/{entity}"): lambda w: Req({"entity": "patient"}),
    ("POST", "/v1/auth/refresh"): lambda w: Req(),
    ("GET", "/v1/auth/me"): lambda w: Req(),
    ("GET", "/v1/auth/roles"): lambda w: Req(),
    ("GET", "/v1/workspaces"): lambda w: Req(),
    ("GET", "/v1/stats"): lambda w: Req(),
    ("GET", "/v1/ingest/runs"): lambda w: Req(),
    ("GET", "/v1/quarantine"): lambda w: Req(),
    ("GET", "/v1/quarantine/{qid}"): lambda w: Req({"qid": w.qid}),
    ("GET", "/v1/patients"): lambda w: Req(params={"phone": w.phone}),
    ("GET", "/v1/patients/{ident}"): lambda w: Req({"ident": w.person}),
    ("GET", "/v1/patients/{person_id}/traits"): lambda w: Req({"person_id": w.person}),
    ("GET", "/v1/patients/{person_id}/tags"): lambda w: Req({"person_id": w.person}),
    ("GET", "/v1/patients/{person_id}/persona"): lambda w: Req({"person_id": w.person}),
    ("GET", "/v1/segments"): lambda w: Req(),
    ("PUT", "/v1/segments/{name}"): lambda w: Req({"name": "elderly"}, json=SEGMENT),
    ("POST", "/v1/segments/preview"): lambda w: Req(params={"as_of": str(AS_OF)}, json=SEGMENT),
    ("GET", "/v1/segments/{name}/count"): lambda w: Req({"name": "elderly"}, {"as_of": str(AS_OF)}),
    ("POST", "/v1/segments/{name}/refresh"): lambda w: Req({"name": "elderly"}, {"as_of": str(AS_OF)}),
    ("GET", "/v1/segments/{name}/members"): lambda w: Req({"name": "elderly"}),
    ("GET", "/v1/segments/{name}/explain/{person_id}"): lambda w: Req(
        {"name": "elderly", "person_id": w.person}, {"as_of": str(AS_OF)}
    ),
    ("GET", "/v1/segments/{name}/lookalike"): lambda w: Req({"name": "elderly"}, {"top": 3}),
    ("GET", "/v1/personas"): lambda w: Req(),
    ("POST", "/v1/personas/build"): lambda w: Req(params={"k": 3}),
    ("POST", "/v1/personas/seed"): lambda w: Req(),
    ("GET", "/v1/journeys"): lambda w: Req(),
    ("PUT", "/v1/journeys/{name}"): lambda w: Req({"name": "draft"}, json=JOURNEY),
    ("POST", "/v1/journeys/{name}/entries"): lambda w: Req(
        {"name": "hello"}, json={"persons": [w.person], "key": f"k{next(w.counter)}"}
    ),
    ("POST", "/v1/journeys/{name}/{action}"): lambda w: Req({"name": "hello", "action": "publish"}),
    ("GET", "/v1/journeys/{name}/stats"): lambda w: Req({"name": "hello"}),
    ("GET", "/v1/content"): lambda w: Req(),
    ("POST", "/v1/content/{content_id}"): lambda w: Req(
        {"content_id": "matrix"}, json={"kind": "outbox", "body": {"zh": "您好"}, "purpose": "service"}
    ),
    ("POST", "/v1/content/{content_id}/{version}/{action}"): lambda w: Req(
        {"content_id": "matrix", "version": _content_version(w, submitted=False), "action": "submit"}
    ),
    ("GET", "/v1/tasks"): lambda w: Req(),
    ("POST", "/v1/tasks/{task_id}/done"): lambda w: Req({"task_id": _task(w)}, {"outcome": "reached"}),
}
#: more requests for a route whose permission depends on a parameter
EXTRA: dict[tuple[str, str], list[Callable[[World], Req]]] = {
    ("POST", "/v1/content/{content_id}/{version}/{action}"): [
        lambda w: Req(
            {"content_id": "matrix", "version": _content_version(w, submitted=True), "action": "approve"}
        ),
        lambda w: Req(
            {"content_id": "matrix", "version": _content_version(w, submitted=True), "action": "reject"}
        ),
    ]
}


def _url(path: str, params: dict[str, Any]) -> str:
    for k, v in params.items():
        path = path.replace("{" + k + "}", str(v))
    return path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_network(tmp_path_factory.mktemp("matrix-net") / "net")


@pytest.fixture
def world(backend: Backend, network: Path, tmp_path: Path) -> World:
    linked: Linked = make_linked(backend, network)
    store = linked.store
    person = linked.busiest_person()
    clear = PatientView(store, viewer=Viewer(default=Visibility.CLEAR)).show(person)["golden"]["fields"]
    assert clear["phone"]["value"] and clear["id_number"]["value"]
    compute_traits(store, as_of=AS_OF, clock=backend.clock)
    seg.save_segment(store, "elderly", SEGMENT)
    seg.refresh(store, "elderly", as_of=AS_OF, clock=backend.clock)
    build_personas(store, k=3, clock=backend.clock)
    bad = tmp_path / "patient.csv"
    bad.write_text("key,name,sex,phone\nq1,王小明,robot,13912345678\n", encoding="utf-8")
    Ingestor(backend, "default").ingest(bad, "csv", source="bad_source")
    qid = str(store.scalar("SELECT min(id) FROM quarantine"))
    item = save_content(store, "hi", kind="outbox", body={"zh": "您好"}, purpose="service")
    move(store, "hi", item.version, "submit", by="test")
    move(store, "hi", item.version, "approve", by="test")
    save_journey(store, {**JOURNEY, "name": "hello"})
    set_status(store, "hello", "published")
    for role in ROLES:
        add_user(store, f"u-{role.replace('_', '-')}", PASSWORD, role, clock=backend.clock)
    return World(
        backend, store, person, clear["phone"]["value"].removeprefix("+86"), clear["id_number"]["value"], qid
    )


def _sign_in(client: TestClient) -> dict[str, dict[str, str]]:
    headers = {}
    for role in ROLES:
        r = client.post(
            "/v1/auth/login", json={"username": f"u-{role.replace('_', '-')}", "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        assert r.json()["role"] == role and r.json()["expires_in"] == 900
        headers[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return headers


def test_every_route_by_every_role(world: World) -> None:
    app = create_app(backend=world.backend, clock=world.backend.clock)
    seen: set[tuple[str, str]] = set()
    with TestClient(app) as client:
        headers = _sign_in(client)
        for route, path in every_route(app):
            if not isinstance(route, APIRoute):
                static = isinstance(route, Mount) and isinstance(route.app, StaticFiles)
                assert path in DOCS or static, (
                    f"{path}: a non-FastAPI route must be added to the access rules"
                )
                continue
            g = guard(route)
            assert g is not None, (
                f"{sorted(route.methods)} {path} declares no permission: add Depends(requires(...)) "
                "or Depends(public('why'))"
            )
            for method in sorted(route.methods):
                seen.add((method, path))
                if not hasattr(g, "permission"):  # public, with its reason
                    continue
                if not isinstance(g, Requires):
                    # another surface's session guard (the console: cookies, tested role by role in
                    # tests/console): without a session it serves nothing
                    probe = _url(path, {p: "x" for p in re.findall(r"{(\w+)}", path)})
                    r = client.request(method, probe, follow_redirects=False)
                    assert r.status_code != 200 and r.status_code < 500, f"{method} {path}: {r.status_code}"
                    continue
                sample = SAMPLES.get((method, path))
                makers = [sample, *EXTRA.get((method, path), [])] if sample else [None]
                for make in makers:
                    _check(client, headers, world, method, path, g, make)
    assert set(SAMPLES) - seen == set(), "samples for routes that no longer exist"
    assert len(seen) >= len(SAMPLES) + 10  # the collection API and the provider callbacks are public
    public_ok = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
    with TestClient(app) as client:
        for method, path in public_ok:
            assert client.request(method, path).status_code == 200


def _check(
    client: TestClient,
    headers: dict[str, dict[str, str]],
    w: World,
    method: str,
    path: str,
    g: Requires,
    make: Callable[[World], Req] | None,
) -> None:
    probe = make(w) if make else Req({p: "x" for p in re.findall(r"{(\w+)}", path)})
    permission = g.permission_for(probe.path_params)
    what = f"{method} {path} ({permission})"
    anonymous = client.request(method, _url(path, probe.path_params), params=probe.params, json=probe.json)
    assert anonymous.status_code == 401, f"{what}: anonymous got {anonymous.status_code}"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    unknown_ws = client.request(
        method,
        _url(path, probe.path_params),
        params=probe.params,
        json=probe.json,
        headers={"X-Careloop-Workspace": "nowhere"},
    )
    assert unknown_ws.status_code == 401, (
        f"{what}: anonymous in an unknown workspace got {unknown_ws.status_code}"
    )
    for role, r in ROLES.items():
        req = make(w) if make else probe
        got = client.request(
            method, _url(path, req.path_params), params=req.params, json=req.json, headers=headers[role]
        )
        holds = permission is None or r.allows(permission)
        if not holds:
            assert got.status_code == 403, f"{what}: {role} got {got.status_code}, expected 403"
            assert got.headers["content-type"] == "application/problem+json"
        elif make is None:
            assert got.status_code not in (401, 403), (
                f"{what}: {role} got {got.status_code}: {got.text[:300]}"
            )
        else:
            assert got.status_code == req.ok, f"{what}: {role} got {got.status_code}: {got.text[:300]}"
        if role == "marketer":
            _no_full_identifiers(got.text, what, w)


def _no_full_identifiers(text: str, what: str, w: World) -> None:
    assert not FULL_PHONE.search(text), f"{what}: a full phone reached a marketer"
    assert not FULL_ID_NUMBER.search(text), f"{what}: a full ID number reached a marketer"
    assert w.phone not in text and w.id_number not in text


def test_the_scan_finds_identifiers_where_they_are_allowed(world: World) -> None:
    """The marketer scan is not vacuous: the DPO's 360 and look-up carry the full phone and ID number."""
    with TestClient(create_app(backend=world.backend, clock=world.backend.clock)) as client:
        headers = _sign_in(client)
        dpo = client.get(f"/v1/patients/{world.person}", headers=headers["dpo"]).text
        assert FULL_PHONE.search(dpo) and FULL_ID_NUMBER.search(dpo)
        assert world.id_number in dpo
        marketer = client.get(f"/v1/patients/{world.person}", headers=headers["marketer"])
        doc = marketer.json()
        assert doc["viewer"] == "marketer"
        fields = doc["golden"]["fields"]
        clear = orjson.loads(dpo)["golden"]["fields"]
        assert fields["name"]["value"] == mask(clear["name"]["value"], "name")  # 张*明
        assert fields["phone"]["value"] == mask(clear["phone"]["value"], "phone")  # 138****5678
        assert fields["id_number"]["value"] == "****"
        assert {i["value"] for i in doc["identifiers"] if i["kind"] == "id_number"} <= {"****"}
        assert "history" not in doc
        found = client.get("/v1/patients", params={"id_number": world.id_number}, headers=headers["marketer"])
        assert found.status_code == 200 and world.person in {f["person_id"] for f in found.json()["items"]}
        _no_full_identifiers(found.text, "find by ID number", world)


def test_an_analyst_sees_pseudonyms_only(world: World) -> None:
    with TestClient(create_app(backend=world.backend, clock=world.backend.clock)) as client:
        headers = _sign_in(client)
        dpo = client.get(f"/v1/patients/{world.person}", headers=headers["dpo"]).json()
        r = client.get(f"/v1/patients/{world.person}", headers=headers["analyst"])
        assert r.status_code == 200
        doc = r.json()
        assert doc["viewer"] == "analyst" and doc["person_id"] == world.person
        assert not {"identifiers", "sources", "household", "history"} & set(doc)
        assert {doc["golden"]["fields"][f]["value"] for f in ("name", "phone", "id_number", "address")} <= {
            "****",
            None,
        }
        names = {s["name"] for s in dpo["sources"]} | {dpo["golden"]["fields"]["name"]["value"]}
        record_keys = {s["key"] for s in dpo["sources"]}
        for value in {v for v in names | {mask(n, "name") for n in names if n} if v}:
            assert value not in r.text
        for key in record_keys:
            assert f'"{key}"' not in r.text  # no patient keys (HIS numbers ...) in lists or provenance
        # a record reference is an identifier: a pseudonymous reader names persons by person id only
        ref = dpo["sources"][0]["ref"]
        assert client.get(f"/v1/patients/{ref}", headers=headers["analyst"]).status_code == 404
        assert (
            client.get("/v1/patients", params={"phone": world.phone}, headers=headers["analyst"]).status_code
            == 403
        )


def test_an_engineer_sees_the_quarantine_without_its_values(world: World) -> None:
    with TestClient(create_app(backend=world.backend, clock=world.backend.clock)) as client:
        headers = _sign_in(client)
        row = client.get(f"/v1/quarantine/{world.qid}", headers=headers["engineer"]).json()
        assert row["reason"] and row["raw"] is None
        admin = client.get(f"/v1/quarantine/{world.qid}", headers=headers["admin"]).json()
        assert admin["raw"]["phone"] == "139****5678"
        assert client.get(f"/v1/patients/{world.person}", headers=headers["engineer"]).status_code == 403


def test_roles_table_is_consistent() -> None:
    assert {"admin", "dpo", "marketer", "analyst", "medical_rep", "reviewer", "engineer"} <= set(ROLES)
    assert ROLES["dpo"].allows("patients:read_identifiers") and not ROLES["admin"].allows(
        "patients:read_identifiers"
    )
    for name in ("medical_rep", "reviewer", "engineer"):
        assert not ROLES[name].allows("patients:read") and not ROLES[name].viewer.sections
    assert ROLES["dpo"].allows("dsr:write") and ROLES["dpo"].allows("audit:read")
