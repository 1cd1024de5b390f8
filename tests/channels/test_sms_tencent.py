"""Tencent Cloud SMS: the official SDK against a local fake of sms.tencentcloudapi.com (TC3 signature, body)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from careloop.channels import OutboundMessage, build_channel
from careloop.channels.sms_tencent import TencentSmsChannel
from careloop.clock import FixedClock
from tests.channels.fakes import FakeServer, Request, Response, closed_port, serve, verify_tc3

pytest.importorskip(
    "tencentcloud.sms",
    reason="the Tencent Cloud SMS SDK is not installed: pip install -e '.[channels]' (make install-dev does)",
)

SID, SKEY, APP = "AKIDtestSecretId", "test-secret-key-Q7", "1400006666"
PHONE = "13800138000"


def message(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": "j2:e7:remind:1",
        "person_id": "p7",
        "to": PHONE,
        "body": "【仁济医院】您预约的门诊在明天上午9:00。回T退订",
        "template_code": "1110",
        "template_params": {"2": "09:00", "1": "明天"},
    }
    fields.update(over)
    return OutboundMessage(**fields)


def status(code: str = "Ok", msg: str = "send success", serial: str = "2646:155020") -> dict[str, Any]:
    return {
        "SerialNo": serial,
        "PhoneNumber": "+86" + PHONE,
        "Fee": 1,
        "SessionContext": "j2:e7:remind:1",
        "Code": code,
        "Message": msg,
        "IsoCode": "CN",
    }


class TencentFake:
    """sms SendSms 2021-01-11: TC3-HMAC-SHA256 recomputed with the test SecretKey; headers and body checked."""

    def __init__(self) -> None:
        self.answer: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: {"SendStatusSet": [status()]}

    def __call__(self, req: Request) -> Response:
        problem = verify_tc3(req, SID, SKEY, "sms")
        if problem:
            return Response(
                200, {"Response": {"Error": {"Code": problem, "Message": "auth"}, "RequestId": "r"}}
            )
        assert req.method == "POST" and req.path == "/"
        assert req.headers["content-type"] == "application/json"
        assert req.headers["x-tc-action"] == "SendSms"
        assert req.headers["x-tc-version"] == "2021-01-11"
        assert req.headers["x-tc-region"] == "ap-guangzhou"
        body = req.json()
        return Response(200, {"Response": {**self.answer(body), "RequestId": "0d3d8b7c-3a2b"}})


@pytest.fixture
def fake() -> Iterator[tuple[TencentFake, FakeServer]]:
    handler = TencentFake()
    with serve(handler) as server:
        yield handler, server
        assert server.errors == []


def channel(host: str, key: str = SKEY, **over: Any) -> TencentSmsChannel:
    config = {
        "secret_id": SID,
        "secret_key": key,
        "sms_sdk_app_id": APP,
        "sign_name": "仁济医院",
        "endpoint": host,
        "protocol": "http",
        "timeout_seconds": 2,
        **over,
    }
    ch = build_channel("tencent_sms", config, clock=FixedClock(datetime(2026, 11, 1, 15, 0, tzinfo=UTC)))
    assert isinstance(ch, TencentSmsChannel)
    return ch


def test_send_signs_and_passes_every_parameter(fake: tuple[TencentFake, FakeServer]) -> None:
    _, server = fake
    result = channel(server.host).send(message())
    assert result.status == "sent", result.error
    assert result.provider_message_id == "2646:155020"
    (req,) = server.requests
    assert req.json() == {
        "PhoneNumberSet": ["+8613800138000"],
        "SmsSdkAppId": APP,
        "SignName": "仁济医院",
        "TemplateId": "1110",
        "TemplateParamSet": ["明天", "09:00"],  # positional, in the order of the keys 1, 2
        "SessionContext": "j2:e7:remind:1",
    }


def test_a_wrong_key_is_refused_by_the_fake(fake: tuple[TencentFake, FakeServer]) -> None:
    _, server = fake
    result = channel(server.host, key="wrong").send(message())
    assert result.status == "failed" and result.code == "AuthFailure.SignatureFailure"
    assert "secret_key" in (result.error or "")


@pytest.mark.parametrize(
    ("code", "status_", "wait"),
    [
        ("FailedOperation.PhoneNumberInBlacklist", "failed", None),
        ("InvalidParameterValue.IncorrectPhoneNumber", "failed", None),
        ("FailedOperation.TemplateIncorrectOrUnapproved", "failed", None),
        ("LimitExceeded.PhoneNumberThirtySecondLimit", "retry", 60.0),
        ("LimitExceeded.PhoneNumberDailyLimit", "retry", 3600.0),
        ("FailedOperation.MarketingSendTimeConstraint", "retry", 9 * 3600.0),  # 23:00 Beijing -> 08:00
    ],
)
def test_per_number_codes_are_classified(
    fake: tuple[TencentFake, FakeServer], code: str, status_: str, wait: float | None
) -> None:
    handler, server = fake
    handler.answer = lambda body: {
        "SendStatusSet": [status(code, f"{code} for {body['PhoneNumberSet'][0]}", "")]
    }
    result = channel(server.host).send(message())
    assert (result.status, result.retry_after, result.code) == (status_, wait, code)
    assert code in (result.error or "") and PHONE not in (result.error or "")


def test_request_level_errors(fake: tuple[TencentFake, FakeServer]) -> None:
    handler, server = fake
    handler.answer = lambda body: {"Error": {"Code": "InternalError.Timeout", "Message": "timeout"}}
    assert channel(server.host, retry_after_seconds=5).send(message()).retry_after == 5
    handler.answer = lambda body: {"Error": {"Code": "RequestLimitExceeded", "Message": "too fast"}}
    assert channel(server.host).send(message()).status == "retry"
    handler.answer = lambda body: {
        "Error": {"Code": "UnauthorizedOperation.SmsSdkAppIdVerifyFail", "Message": "x"}
    }
    result = channel(server.host).send(message())
    assert result.status == "failed" and "sms_sdk_app_id" in (result.error or "")


def test_network_errors_and_bad_parameters() -> None:
    assert channel(f"127.0.0.1:{closed_port()}").send(message()).code == "network"
    bad = channel("127.0.0.1:1").send(message(template_params={"name": "张三"}))
    assert bad.status == "failed" and "positional" in (bad.error or "")


def test_status_callbacks_become_receipts() -> None:
    ch = channel("127.0.0.1:1")
    callback = [
        {
            "user_receive_time": "2026-11-01 09:00:03",
            "nationcode": "86",
            "mobile": PHONE,
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": "2646:155020",
        },
        {
            "user_receive_time": "2026-11-01 09:00:09",
            "nationcode": "86",
            "mobile": PHONE,
            "report_status": "FAIL",
            "errmsg": "MK:0005",
            "description": "空号",
            "sid": "2646:155021",
        },
    ]
    ok, failed = ch.parse_receipts(json.dumps(callback).encode(), {"Content-Type": "application/json"})
    assert (ok.event, ok.provider_message_id, ok.status) == ("message_delivered", "2646:155020", "DELIVRD")
    assert ok.at == datetime(2026, 11, 1, 1, 0, 3, tzinfo=UTC)
    assert (failed.event, failed.error) == ("message_failed", "MK:0005: 空号")
    assert PHONE not in json.dumps([ok.properties(), failed.properties()])
