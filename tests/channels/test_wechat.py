"""WeChat official account: template / subscribe messages against a local fake of api.weixin.qq.com —
access-token fetch, caching on an injected clock, refresh on 40001, client_msg_id de-duplication,
error classification, and event-push receipts (plain and 安全模式)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from careloop.channels import ChannelError, OutboundMessage, build_channel
from careloop.channels.wechat import WeChatChannel
from careloop.clock import FixedClock
from tests.channels.fakes import FakeServer, Request, Response, closed_port, serve

APPID, SECRET, OPENID = "wx5f0c7e1a2b3c4d5e", "app-secret-0123456789abcdef", "oia2TjuEGTNoeX76QEjQNrcURxG8"
TEMPLATE = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY"


@dataclass
class WeChatFake:
    """The parts of api.weixin.qq.com careloop calls, with WeChat's rules and error codes."""

    tokens: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    seen_client_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)  # errcodes to answer sends with, in order

    def revoke(self) -> None:
        """Another process took a new token: ours stops working."""
        self.valid.clear()

    def _issue(self) -> Response:
        token = f"ACCESS_TOKEN_{len(self.tokens) + 1}"
        self.tokens.append(token)
        self.valid.add(token)
        return Response(200, {"access_token": token, "expires_in": 7200})

    def __call__(self, req: Request) -> Response:
        if req.path == "/cgi-bin/token":
            assert req.method == "GET"
            q = req.query
            assert q["grant_type"] == "client_credential"
            if q.get("appid") != APPID:
                return Response(200, {"errcode": 40013, "errmsg": "invalid appid"})
            if q.get("secret") != SECRET:
                return Response(200, {"errcode": 40001, "errmsg": "invalid credential"})
            return self._issue()
        if req.path == "/cgi-bin/stable_token":
            assert req.method == "POST"
            body = req.json()
            assert (
                body["grant_type"] == "client_credential"
                and body["appid"] == APPID
                and body["secret"] == SECRET
            )
            if self.valid:
                return Response(200, {"access_token": sorted(self.valid)[-1], "expires_in": 7000})
            return self._issue()
        token = req.query.get("access_token")
        if token not in self.valid:
            return Response(200, {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"})
        body = req.json()
        assert req.method == "POST" and req.headers["content-type"] == "application/json"
        assert body["touser"] == OPENID and body["template_id"] == TEMPLATE
        assert all(set(v) == {"value"} and isinstance(v["value"], str) for v in body["data"].values())
        if self.fail_next:
            code = self.fail_next.pop(0)
            return Response(200, {"errcode": code, "errmsg": f"error {code}"})
        if req.path == "/cgi-bin/message/template/send":
            assert set(body) <= {"touser", "template_id", "url", "miniprogram", "client_msg_id", "data"}
            key = (body["touser"], body["client_msg_id"])
            if key not in self.seen_client_ids:  # WeChat sends one message per openid + client_msg_id
                self.seen_client_ids[key] = 200000000 + len(self.seen_client_ids)
                self.delivered.append(body)
            return Response(200, {"errcode": 0, "errmsg": "ok", "msgid": self.seen_client_ids[key]})
        if req.path == "/cgi-bin/message/subscribe/bizsend":
            assert set(body) <= {"touser", "template_id", "page", "miniprogram", "data"}
            self.delivered.append(body)
            return Response(200, {"errcode": 0, "errmsg": "ok", "msgid": 300000000 + len(self.delivered)})
        raise AssertionError(f"unexpected path {req.path}")


@pytest.fixture
def fake() -> Iterator[tuple[WeChatFake, FakeServer]]:
    handler = WeChatFake()
    with serve(handler) as server:
        yield handler, server
        assert server.errors == []


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 1, 1, 0, tzinfo=UTC))


def channel(url: str, clock: FixedClock, **over: Any) -> WeChatChannel:
    config = {"app_id": APPID, "app_secret": SECRET, "base_url": url, "timeout_seconds": 2, **over}
    ch = build_channel("wechat", config, clock=clock)
    assert isinstance(ch, WeChatChannel)
    return ch


def message(key: str = "j3:e1:notify:1", **over: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "person_id": "p1",
        "to": OPENID,
        "body": "复诊提醒：您预约的内分泌科门诊在11月3日上午。",
        "template_code": TEMPLATE,
        "template_params": {"thing1": "内分泌科复诊", "time2": "2026-11-03 09:00"},
    }
    fields.update(over)
    return OutboundMessage(**fields)


def test_template_message_body_and_token(fake: tuple[WeChatFake, FakeServer], clock: FixedClock) -> None:
    _wechat, server = fake
    ch = channel(server.url, clock)
    result = ch.send(
        message(
            link="https://h5.example.cn/visit/3",
            metadata={"miniprogram_pagepath": "pages/visit?id=3", "miniprogram_app_id": "wxmini01"},
        )
    )
    assert result.status == "sent" and result.provider_message_id == "200000000"
    token_req, send_req = server.requests
    assert token_req.query == {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    assert send_req.path == "/cgi-bin/message/template/send"
    assert send_req.query == {"access_token": "ACCESS_TOKEN_1"}
    assert send_req.json() == {
        "touser": OPENID,
        "template_id": TEMPLATE,
        "data": {"thing1": {"value": "内分泌科复诊"}, "time2": {"value": "2026-11-03 09:00"}},
        "url": "https://h5.example.cn/visit/3",
        "miniprogram": {"appid": "wxmini01", "pagepath": "pages/visit?id=3"},
        "client_msg_id": "j3:e1:notify:1",
    }


def test_secrets_in_urls_never_reach_the_logs(
    fake: tuple[WeChatFake, FakeServer], clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = fake
    with caplog.at_level(logging.INFO):
        assert channel(server.url, clock).send(message()).ok
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/cgi-bin/token" in logged and "secret=***" in logged and "access_token=***" in logged
    assert SECRET not in logged and "ACCESS_TOKEN_1" not in logged and OPENID not in logged


def test_token_is_cached_until_expiry_minus_margin(
    fake: tuple[WeChatFake, FakeServer], clock: FixedClock
) -> None:
    wechat, server = fake
    ch = channel(server.url, clock, token_margin_seconds=300)
    for i in range(3):
        assert ch.send(message(f"k{i}")).ok
    assert ch.token_fetches == 1 and len(wechat.tokens) == 1
    clock.advance(timedelta(seconds=7200 - 300 - 1))  # still inside the margin
    assert ch.send(message("k3")).ok and ch.token_fetches == 1
    clock.advance(timedelta(seconds=2))  # now within 300 s of expiry: fetch a new one
    assert ch.send(message("k4")).ok and ch.token_fetches == 2
    assert server.requests[-1].query["access_token"] == "ACCESS_TOKEN_2"


def test_refused_token_is_refreshed_once(fake: tuple[WeChatFake, FakeServer], clock: FixedClock) -> None:
    wechat, server = fake
    ch = channel(server.url, clock)
    assert ch.send(message("a")).ok
    wechat.revoke()  # e.g. another process fetched a token with the same AppSecret
    result = ch.send(message("b"))
    assert result.ok and ch.token_fetches == 2
    assert [
        r.query.get("access_token") for r in server.requests if r.path.startswith("/cgi-bin/message")
    ] == [
        "ACCESS_TOKEN_1",
        "ACCESS_TOKEN_1",
        "ACCESS_TOKEN_2",
    ]


def test_client_msg_id_makes_a_repeat_send_once(
    fake: tuple[WeChatFake, FakeServer], clock: FixedClock
) -> None:
    wechat, server = fake
    ch = channel(server.url, clock)
    first, again = ch.send(message("same-key")), ch.send(message("same-key"))
    assert first.provider_message_id == again.provider_message_id
    assert len(wechat.delivered) == 1


def test_subscribe_message(fake: tuple[WeChatFake, FakeServer], clock: FixedClock) -> None:
    _wechat, server = fake
    ch = channel(server.url, clock, message_type="subscribe")
    assert ch.send(message(link="https://h5.example.cn/r")).ok
    assert server.requests[-1].path == "/cgi-bin/message/subscribe/bizsend"
    assert server.requests[-1].json() == {
        "touser": OPENID,
        "template_id": TEMPLATE,
        "data": {"thing1": {"value": "内分泌科复诊"}, "time2": {"value": "2026-11-03 09:00"}},
        "page": "https://h5.example.cn/r",
    }
    template = channel(server.url, clock).send(message("t", metadata={"wechat_message_type": "subscribe"}))
    assert template.ok and server.requests[-1].path == "/cgi-bin/message/subscribe/bizsend"


def test_stable_token_api(fake: tuple[WeChatFake, FakeServer], clock: FixedClock) -> None:
    wechat, server = fake
    a = channel(server.url, clock, token_api="stable_token")
    b = channel(server.url, clock, token_api="stable_token")
    assert a.send(message("x")).ok and b.send(message("y")).ok
    assert len(wechat.tokens) == 1  # both processes share one stable token


@pytest.mark.parametrize(
    ("errcode", "status", "wait"),
    [
        (43004, "failed", None),  # not a follower
        (43101, "failed", None),  # refused / not subscribed
        (40003, "failed", None),
        (40037, "failed", None),
        (-1, "retry", 60.0),
        (45009, "retry", 3600.0),
    ],
)
def test_errors_are_classified(
    fake: tuple[WeChatFake, FakeServer], clock: FixedClock, errcode: int, status: str, wait: float | None
) -> None:
    wechat, server = fake
    wechat.fail_next = [errcode]
    result = channel(server.url, clock).send(message())
    assert (result.status, result.code, result.retry_after) == (status, str(errcode), wait)
    assert f"errcode {errcode}" in (result.error or "")


def test_wrong_secret_and_network(fake: tuple[WeChatFake, FakeServer], clock: FixedClock) -> None:
    _, server = fake
    bad = channel(server.url, clock, app_secret="nope").send(message())
    assert bad.status == "failed" and "app_secret" in (bad.error or "")
    down = channel(f"http://127.0.0.1:{closed_port()}", clock).send(message())
    assert down.status == "retry" and down.code == "network"
    assert channel(server.url, clock).send(message(template_code=None)).code == "no_template"


# ---- receipts ---------------------------------------------------------------------------------------

TOKEN = "callbackToken123"
FINISH = f"""<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>
<FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1793494800</CreateTime>
<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>
<MsgID>200163840</MsgID><Status><![CDATA[failed:user block]]></Status></xml>"""
SUBSCRIBED = f"""<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
<FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1793494800</CreateTime>
<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event>
<SubscribeMsgSentEvent><List><TemplateId><![CDATA[{TEMPLATE}]]></TemplateId><MsgID>1700827132819554304</MsgID>
<ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>"""


def _sig(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def test_event_pushes_become_receipts(clock: FixedClock) -> None:
    ch = channel("http://127.0.0.1:1", clock, callback_token=TOKEN)
    params = {"timestamp": "1793494801", "nonce": "917421", "signature": _sig(TOKEN, "1793494801", "917421")}
    (blocked,) = ch.parse_receipts(FINISH.encode(), {}, params)
    assert (blocked.event, blocked.provider_message_id, blocked.status) == (
        "message_failed",
        "200163840",
        "failed:user block",
    )
    assert blocked.at == datetime.fromtimestamp(1793494800, UTC)
    (sent,) = ch.parse_receipts(SUBSCRIBED.encode(), {}, params)
    assert (sent.event, sent.provider_message_id) == ("message_delivered", "1700827132819554304")
    with pytest.raises(ChannelError, match="signature"):
        ch.parse_receipts(FINISH.encode(), {}, {**params, "signature": "0" * 40})
    with pytest.raises(ChannelError, match="DOCTYPE"):
        ch.parse_receipts(b'<!DOCTYPE x [<!ENTITY a "b">]><xml/>', {}, params)


def _encrypt(aes_key: str, xml: bytes, appid: str) -> str:
    """WeChat's 安全模式 envelope, written from its specification."""
    key = base64.b64decode(aes_key + "=")
    plain = os.urandom(16) + struct.pack(">I", len(xml)) + xml + appid.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def test_encrypted_pushes_are_verified_and_decrypted(clock: FixedClock) -> None:
    aes_key = base64.b64encode(os.urandom(32)).decode()[:43]
    ch = channel("http://127.0.0.1:1", clock, callback_token=TOKEN, encoding_aes_key=aes_key)
    encrypted = _encrypt(aes_key, FINISH.encode(), APPID)
    envelope = f"<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    params = {
        "timestamp": "1793494801",
        "nonce": "55",
        "msg_signature": _sig(TOKEN, "1793494801", "55", encrypted),
    }
    (receipt,) = ch.parse_receipts(envelope.encode(), {}, params)
    assert receipt.provider_message_id == "200163840" and receipt.event == "message_failed"
    with pytest.raises(ChannelError, match="signature"):
        ch.parse_receipts(envelope.encode(), {}, {**params, "msg_signature": "1" * 40})
    other = _encrypt(aes_key, FINISH.encode(), "wxsomeoneelse")
    forged = envelope.replace(encrypted, other)
    with pytest.raises(ChannelError, match="another AppID"):
        ch.parse_receipts(
            forged.encode(), {}, {**params, "msg_signature": _sig(TOKEN, "1793494801", "55", other)}
        )
