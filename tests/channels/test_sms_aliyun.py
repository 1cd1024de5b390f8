"""Aliyun SMS: the official SDK against a local fake of dysmsapi that checks the signature and every parameter."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from careloop.channels import OutboundMessage, build_channel
from careloop.channels.sms_aliyun import AliyunSmsChannel
from careloop.clock import FixedClock
from tests.channels.fakes import FakeServer, Request, Response, closed_port, serve, verify_acs3

pytest.importorskip(
    "alibabacloud_dysmsapi20170525",
    reason="the Aliyun SMS SDK is not installed: pip install -e '.[channels]' (make install-dev does)",
)

AK, SECRET = "LTAI5tTestKeyId", "test-secret-Zx9"
PHONE = "13800138000"


def message(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": "j1:e42:remind:1",
        "person_id": "p42",
        "to": PHONE,
        "body": "【仁济医院】张三您好，您的二甲双胍将用完。回T退订",
        "template_code": "SMS_465012345",
        "template_params": {"name": "张三", "drug": "二甲双胍"},
    }
    fields.update(over)
    return OutboundMessage(**fields)


class AliyunFake:
    """dysmsapi's SendSms: signature V3 checked with the test secret, the action, version and parameters."""

    def __init__(self) -> None:
        self.nonces: set[str] = set()
        self.answer: Callable[[dict[str, str]], Response] = lambda q: Response(
            200,
            {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "F655A8D5-B967"},
        )

    def __call__(self, req: Request) -> Response:
        problem = verify_acs3(req, AK, SECRET, self.nonces)
        if problem:
            return Response(400, {"Code": problem, "Message": "signature check failed", "RequestId": "r"})
        assert req.method == "POST" and req.path == "/"
        assert req.headers["x-acs-action"] == "SendSms"
        assert req.headers["x-acs-version"] == "2017-05-25"
        assert req.body == b""  # RPC style: every parameter is in the signed query string
        return self.answer(req.query)


@pytest.fixture
def fake() -> Iterator[tuple[AliyunFake, FakeServer]]:
    handler = AliyunFake()
    with serve(handler) as server:
        yield handler, server
        assert server.errors == []


def channel(server_host: str, secret: str = SECRET, **over: Any) -> AliyunSmsChannel:
    config = {
        "access_key_id": AK,
        "access_key_secret": secret,
        "sign_name": "仁济医院",
        "endpoint": server_host,
        "protocol": "http",
        "connect_timeout_ms": 2000,
        "read_timeout_ms": 2000,
        **over,
    }
    ch = build_channel("aliyun_sms", config, clock=FixedClock(datetime(2026, 11, 1, 1, 0, tzinfo=UTC)))
    assert isinstance(ch, AliyunSmsChannel)
    return ch


def test_send_signs_and_passes_every_parameter(fake: tuple[AliyunFake, FakeServer]) -> None:
    _, server = fake
    result = channel(server.host).send(message())
    assert result.status == "sent", result.error
    assert result.provider_message_id == "900619746936498440^0"
    (req,) = server.requests
    assert req.query == {
        "PhoneNumbers": PHONE,
        "SignName": "仁济医院",
        "TemplateCode": "SMS_465012345",
        "TemplateParam": json.dumps({"name": "张三", "drug": "二甲双胍"}, ensure_ascii=False),
        "OutId": "j1:e42:remind:1",
    }
    assert json.loads(req.query["TemplateParam"]) == {"name": "张三", "drug": "二甲双胍"}


def test_plus86_numbers_and_long_keys_are_normalised(fake: tuple[AliyunFake, FakeServer]) -> None:
    _, server = fake
    key = "journey/post-discharge/entry/" + "x" * 80
    assert (
        channel(server.host).send(message(to="+86 138-0013-8000", idempotency_key=key, sign_name="某医院")).ok
    )
    q = server.requests[0].query
    assert q["PhoneNumbers"] == PHONE and q["SignName"] == "某医院"
    assert len(q["OutId"]) == 32 and q["OutId"] != key  # a stable digest of a long key


def test_a_wrong_secret_is_refused_by_the_fake(fake: tuple[AliyunFake, FakeServer]) -> None:
    _, server = fake
    result = channel(server.host, secret="not-the-secret").send(message())
    assert result.status == "failed" and result.code == "SignatureDoesNotMatch"
    assert "access_key_secret" in (result.error or "")


def test_invalid_number_fails_without_retry_and_hides_the_number(fake: tuple[AliyunFake, FakeServer]) -> None:
    handler, server = fake
    handler.answer = lambda q: Response(
        200,
        {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": f"非法手机号 {q['PhoneNumbers']}", "RequestId": "r"},
    )
    result = channel(server.host).send(message())
    assert result.status == "failed" and result.code == "isv.MOBILE_NUMBER_ILLEGAL"
    assert "isv.MOBILE_NUMBER_ILLEGAL" in (result.error or "") and PHONE not in (result.error or "")
    assert result.retry_after is None


def test_unapproved_template_fails(fake: tuple[AliyunFake, FakeServer]) -> None:
    handler, server = fake
    handler.answer = lambda q: Response(
        200, {"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法", "RequestId": "r"}
    )
    result = channel(server.host).send(message())
    assert result.status == "failed" and "template_code" in (result.error or "")


def test_frequency_limits_and_system_errors_retry(fake: tuple[AliyunFake, FakeServer]) -> None:
    handler, server = fake
    handler.answer = lambda q: Response(
        200, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发流控", "RequestId": "r"}
    )
    limited = channel(server.host, frequency_retry_seconds=1800).send(message())
    assert (
        limited.status == "retry"
        and limited.retry_after == 1800
        and limited.code == "isv.BUSINESS_LIMIT_CONTROL"
    )
    handler.answer = lambda q: Response(
        200, {"Code": "isp.SYSTEM_ERROR", "Message": "系统错误", "RequestId": "r"}
    )
    busy = channel(server.host, retry_after_seconds=15).send(message())
    assert busy.status == "retry" and busy.retry_after == 15


def test_http_5xx_and_throttling_retry(fake: tuple[AliyunFake, FakeServer]) -> None:
    handler, server = fake
    handler.answer = lambda q: Response(
        503, {"Code": "ServiceUnavailable", "Message": "busy", "RequestId": "r"}
    )
    down = channel(server.host).send(message())
    assert down.status == "retry" and down.retry_after == 60
    handler.answer = lambda q: Response(
        400,
        {"Code": "Throttling.User", "Message": "flow control", "RequestId": "r"},
        {"x-acs-retry-after": "2500"},
    )
    throttled = channel(server.host).send(message())
    assert (
        throttled.status == "retry" and throttled.retry_after == 2.5 and throttled.code == "Throttling.User"
    )


def test_network_errors_retry() -> None:
    result = channel(f"127.0.0.1:{closed_port()}").send(message())
    assert result.status == "retry" and result.code == "network"


def test_no_template_fails_before_calling(fake: tuple[AliyunFake, FakeServer]) -> None:
    _, server = fake
    result = channel(server.host).send(message(template_code=None))
    assert result.status == "failed" and result.code == "no_template" and server.requests == []
    bad = channel(server.host).send(message(to="not a number"))
    assert bad.status == "failed" and bad.code == "invalid_number" and server.requests == []


def test_delivery_reports_become_receipts() -> None:
    ch = channel("127.0.0.1:1")
    report = [
        {
            "phone_number": PHONE,
            "send_time": "2026-11-01 09:00:00",
            "report_time": "2026-11-01 09:00:05",
            "success": True,
            "err_code": "DELIVERED",
            "err_msg": "用户接收成功",
            "sms_size": "1",
            "biz_id": "900619746936498440^0",
            "out_id": "j1:e42:remind:1",
        },
        {
            "phone_number": PHONE,
            "report_time": "2026-11-01 09:01:00",
            "success": False,
            "err_code": "MK:0001",
            "err_msg": "空号",
            "biz_id": "123^0",
            "out_id": "k2",
        },
    ]
    delivered, failed = ch.parse_receipts(json.dumps(report).encode(), {})
    assert delivered.event == "message_delivered" and delivered.provider_message_id == "900619746936498440^0"
    assert delivered.idempotency_key == "j1:e42:remind:1"
    assert delivered.at == datetime(2026, 11, 1, 1, 0, 5, tzinfo=UTC)  # Beijing time -> UTC
    assert failed.event == "message_failed" and failed.error == "MK:0001: 空号"
    assert PHONE not in json.dumps([r.properties() for r in (delivered, failed)], ensure_ascii=False)
