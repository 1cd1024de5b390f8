"""App push through the generic HTTP provider, against a local fake gateway that checks the HMAC signature,
the bearer token, the Idempotency-Key header and the JSON body."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from careloop.channels import ChannelError, OutboundMessage, build_channel
from careloop.channels.push import HttpPushChannel
from careloop.clock import FixedClock
from tests.channels.fakes import FakeServer, Request, Response, closed_port, serve

SECRET, BEARER, DEVICE = "push-shared-secret", "gw-token-1", "fcm:dGVzdC1kZXZpY2UtdG9rZW4"


class GatewayFake:
    """A push gateway: rejects unsigned or wrongly signed requests; remembers idempotency keys."""

    def __init__(self) -> None:
        self.by_key: dict[str, str] = {}
        self.answer: Response | None = None

    def __call__(self, req: Request) -> Response:
        expected = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        if req.headers.get("x-careloop-signature") != expected:
            return Response(401, {"error": "bad signature"})
        if req.headers.get("authorization") != f"Bearer {BEARER}":
            return Response(403, {"error": "bad token"})
        assert req.method == "POST" and req.path == "/v1/push"
        assert req.headers["content-type"] == "application/json"
        body = req.json()
        assert req.headers["idempotency-key"] == body["idempotency_key"]
        if self.answer is not None:
            return self.answer
        key = body["idempotency_key"]
        self.by_key.setdefault(key, f"msg-{len(self.by_key) + 1}")
        return Response(200, {"message_id": self.by_key[key]})


@pytest.fixture
def fake() -> Iterator[tuple[GatewayFake, FakeServer]]:
    handler = GatewayFake()
    with serve(handler) as server:
        yield handler, server
        assert server.errors == []


CLOCK = FixedClock(datetime(2026, 11, 1, 1, 0, tzinfo=UTC))


def channel(url: str, **over: Any) -> HttpPushChannel:
    config = {"url": url, "secret": SECRET, "bearer_token": BEARER, "timeout_seconds": 2, **over}
    ch = build_channel("http_push", config, clock=CLOCK)
    assert isinstance(ch, HttpPushChannel)
    return ch


def message(key: str = "j4:e9:push:1") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=key,
        person_id="p9",
        to=DEVICE,
        subject="用药提醒",
        body="该服用今晚的二甲双胍了。",
        link="careapp://meds/today",
        purpose="care",
        metadata={"journey": "diabetes_refill"},
    )


def test_push_is_signed_and_carries_the_message(fake: tuple[GatewayFake, FakeServer]) -> None:
    _, server = fake
    result = channel(f"{server.url}/v1/push").send(message())
    assert result.status == "sent" and result.provider_message_id == "msg-1"
    assert server.requests[0].json() == {
        "idempotency_key": "j4:e9:push:1",
        "to": DEVICE,
        "title": "用药提醒",
        "body": "该服用今晚的二甲双胍了。",
        "link": "careapp://meds/today",
        "purpose": "care",
        "data": {"journey": "diabetes_refill"},
        "sent_at": "2026-11-01T01:00:00+00:00",
    }


def test_the_idempotency_key_header_dedupes_at_the_gateway(fake: tuple[GatewayFake, FakeServer]) -> None:
    handler, server = fake
    ch = channel(f"{server.url}/v1/push")
    assert ch.send(message("k")).provider_message_id == ch.send(message("k")).provider_message_id == "msg-1"
    assert len(handler.by_key) == 1


def test_wrong_secret_is_refused(fake: tuple[GatewayFake, FakeServer]) -> None:
    _, server = fake
    result = channel(f"{server.url}/v1/push", secret="other").send(message())
    assert result.status == "failed" and result.code == "http_401" and "bad signature" in (result.error or "")


def test_status_classification(fake: tuple[GatewayFake, FakeServer]) -> None:
    handler, server = fake
    ch = channel(f"{server.url}/v1/push")
    handler.answer = Response(429, {"error": "slow down"}, {"Retry-After": "7"})
    assert (ch.send(message()).status, ch.send(message()).retry_after) == ("retry", 7.0)
    handler.answer = Response(503, {"error": "maintenance"})
    assert ch.send(message()).retry_after == 60.0
    handler.answer = Response(410, {"error": "token gone", "detail": DEVICE})
    gone = ch.send(message())
    assert (gone.status, gone.code) == ("failed", "unregistered")
    handler.answer = Response(400, {"code": "bad_payload", "error": f"cannot push to {DEVICE}"})
    bad = ch.send(message())
    assert bad.status == "failed" and "bad_payload" in (bad.error or "") and DEVICE not in (bad.error or "")
    assert channel(f"http://127.0.0.1:{closed_port()}/v1/push").send(message()).code == "network"


def test_signed_receipts(fake: tuple[GatewayFake, FakeServer]) -> None:
    ch = channel("http://127.0.0.1:1/v1/push")
    body = json.dumps(
        {
            "receipts": [
                {"message_id": "msg-1", "event": "delivered", "at": "2026-11-01T09:00:02+08:00"},
                {"message_id": "msg-1", "event": "opened", "at": "2026-11-01T09:05:00+08:00"},
                {"message_id": "msg-1", "event": "clicked", "url": "careapp://meds/today"},
            ]
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    delivered, opened, clicked = ch.parse_receipts(body, {"X-Careloop-Signature": signature})
    assert [r.event for r in (delivered, opened, clicked)] == [
        "message_delivered",
        "message_opened",
        "message_clicked",
    ]
    assert (
        delivered.at == datetime(2026, 11, 1, 1, 0, 2, tzinfo=UTC) and clicked.url == "careapp://meds/today"
    )
    with pytest.raises(ChannelError, match="does not match"):
        ch.parse_receipts(body, {"X-Careloop-Signature": "sha256=00"})
    with pytest.raises(ChannelError, match="raw body"):
        ch.parse_receipts(json.loads(body), {"X-Careloop-Signature": signature})
