"""schemathesis against the app's own OpenAPI document, in process (ASGI), signed in as an admin: every
operation, a bounded number of generated requests each, and no answer may be a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.python.asgi import shutdown_lifespans

from careloop.api import create_app
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.messaging.content import save_content
from careloop.profiles import segments as seg
from careloop.storage import Backend
from tests.authn import key_headers
from tests.events.conftest import seed_patients

EXAMPLES = 15


@dataclass
class Api:
    app: FastAPI
    headers: dict[str, str]


@pytest.fixture
def api(backend: Backend, tmp_path: Path, clock: FixedClock) -> Iterator[Api]:
    seed_patients(backend, tmp_path / "seed", n=20)
    store = backend.workspace("default")
    save_content(store, "hi", kind="outbox", body={"zh": "您好"}, purpose="service", clock=clock)
    seg.save_segment(store, "all", {"trait": "age", "op": ">=", "value": 0})
    # no background workers: generated requests must not race a worker over the same rows
    s = get_settings().model_copy(update={"journeys_worker": False, "events_processor": False})
    app = create_app(settings=s, backend=backend, clock=clock)
    try:
        # the workspace header is pinned: a generated one names no workspace, so every answer would be 401
        yield Api(app, {**key_headers(backend), "X-Careloop-Workspace": "default"})
    finally:
        shutdown_lifespans()


def test_no_operation_answers_5xx(api: Api) -> None:
    """Every operation of the schema, `EXAMPLES` generated requests each (driven directly through
    hypothesis: schemathesis' lazy pytest loader does not run on this pytest)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def call(case: Any) -> None:
            response = case.call(headers=api.headers)
            if response.status_code >= 500 and len(failures) < 20:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query or ''} {str(case.body)[:200]} "
                    f"-> {response.status_code}: {response.text[:300]}"
                )

        call()
    assert operations >= 40
    assert not failures, "\n".join(failures)


#: what schemathesis found on PostgreSQL (which cannot store NUL in text): 500s from every route that put a
#: NUL from the URL or a JSON body into a query (login, 360, segments, journeys, content, tasks, receipts)
NUL_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/auth/login", {"json": {"username": "a\x00", "password": "x"}}),
    ("GET", "/v1/patients/a%00b", {}),
    ("GET", "/v1/patients", {"params": {"phone": "138\x0012345678"}}),
    ("GET", "/v1/segments/a%00/count", {}),
    ("GET", "/v1/journeys/a%00/stats", {}),
    ("GET", "/v1/quarantine", {"params": {"run": "\x00"}}),
    ("GET", "/v1/tasks", {"params": {"assignee": "\x00"}}),
    ("POST", "/v1/content/a%00/1/approve", {}),
    ("POST", "/v1/content/c1", {"json": {"kind": "sms", "body": {"zh": "x\x00"}}}),
    ("PUT", "/v1/journeys/j1", {"json": {"trigger": {"type": "api"}, "start": "s", "nodes": {"s\x00": {}}}}),
    (
        "POST",
        "/v1/channels/outbox/receipts",
        {"json": {"idempotency_key": "a\x00", "event": "message_opened"}},
    ),
]


def test_what_schemathesis_found_answers_400(api: Api) -> None:
    from fastapi.testclient import TestClient

    with TestClient(api.app, headers=api.headers, raise_server_exceptions=False) as client:
        for method, path, kw in NUL_REQUESTS:
            r = client.request(method, path, **kw)
            assert r.status_code == 400, f"{method} {path}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"] == "application/problem+json" and "NUL" in r.json()["detail"]
        # a receipt body no channel can read is the provider's error, not the server's
        for kind in ("outbox", "app_push", "sms"):
            r = client.post(f"/v1/channels/{kind}/receipts", content=b"")
            assert r.status_code == 400, f"{kind}: {r.status_code} {r.text[:200]}"
        # an escaped backslash followed by u0000 is text, not a NUL
        r = client.post(
            "/v1/content/c2", json={"kind": "sms", "body": {"zh": "a\\u0000"}, "purpose": "service"}
        )
        assert r.status_code == 200, r.text
        # the collection API keeps its own handling: a NUL there is quarantined with the message (401 here:
        # the request carries no write key, so it is not read at all)
        assert client.post("/v1/track", json={"event": "x\x00"}).status_code == 401
