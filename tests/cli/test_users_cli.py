"""`careloop user` and `careloop apikey`: as written in docs/access-control.md."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from careloop.api import create_app
from careloop.cli import app
from careloop.storage import connect

PASSWORD = "a long cli password"


def test_user_commands_and_sign_in() -> None:
    runner = CliRunner()
    r = runner.invoke(
        app, ["user", "add", "alice", "--role", "marketer", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    r = runner.invoke(app, ["user", "add", "bob", "--role", "analyst"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    r = runner.invoke(
        app, ["user", "add", "carol", "--role", "boss", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert r.exit_code == 2 and "unknown role" in r.output
    listed = orjson.loads(runner.invoke(app, ["user", "list", "--json"]).stdout)
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("alice", "marketer", False),
        ("bob", "analyst", False),
    ]
    assert "password_hash" not in listed[0]
    assert runner.invoke(app, ["user", "set-role", "bob", "reviewer"]).exit_code == 0
    assert runner.invoke(app, ["user", "disable", "alice"]).exit_code == 0
    r = runner.invoke(app, ["user", "list"])
    assert r.exit_code == 0 and "disabled" in r.stdout and "reviewer" in r.stdout
    assert runner.invoke(app, ["user", "disable", "nobody"]).exit_code == 1
    roles = orjson.loads(runner.invoke(app, ["user", "roles", "--json"]).stdout)
    assert {x["role"] for x in roles} >= {
        "admin",
        "dpo",
        "marketer",
        "analyst",
        "medical_rep",
        "reviewer",
        "engineer",
    }

    backend = connect()
    try:
        with TestClient(create_app(backend=backend)) as client:
            r = client.post("/v1/auth/login", json={"username": "bob", "password": PASSWORD})
            assert r.status_code == 200 and r.json()["role"] == "reviewer"
            r = client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
            assert r.status_code == 401
    finally:
        backend.close()
    assert runner.invoke(app, ["user", "enable", "alice"]).exit_code == 0
    r = runner.invoke(app, ["user", "set-password", "alice", "--password-stdin"], input="another long one\n")
    assert r.exit_code == 0


def test_apikey_commands() -> None:
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "apikey",
            "create",
            "trigger",
            "--role",
            "marketer",
            "--scope",
            "journeys:enter",
            "--expires",
            "90d",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    created = orjson.loads(r.stdout)
    key = created["api_key"]
    assert key.startswith("cak_") and created["scopes"] == ["journeys:enter"] and created["expires_at"]
    r = runner.invoke(app, ["apikey", "create", "bot", "--role", "engineer"])
    assert r.exit_code == 0 and "cak_" in r.stdout and "shown once" in r.stdout
    assert (
        runner.invoke(app, ["apikey", "create", "x", "--role", "engineer", "--expires", "soon"]).exit_code
        == 2
    )
    listed = orjson.loads(runner.invoke(app, ["apikey", "list", "--json"]).stdout)
    assert [k["name"] for k in listed] == ["trigger", "bot"] and "api_key" not in listed[0]
    assert key not in runner.invoke(app, ["apikey", "list"]).stdout

    backend = connect()
    try:
        with TestClient(create_app(backend=backend)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/v1/auth/me", headers=headers).json()["permissions"] == ["journeys:enter"]
            r = runner.invoke(app, ["apikey", "revoke", "trigger"])
            assert r.exit_code == 0 and created["key_id"] in r.stdout
            assert client.get("/v1/auth/me", headers=headers).status_code == 401
    finally:
        backend.close()
    assert runner.invoke(app, ["apikey", "revoke", "trigger"]).exit_code == 1
