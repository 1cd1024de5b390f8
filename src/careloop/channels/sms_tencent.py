"""Tencent Cloud (腾讯云) SMS through the official SDK (``tencentcloud-sdk-python-sms``): ``SendSms`` 2021-01-11.

The SDK signs each call with TC3-HMAC-SHA256 and posts JSON: PhoneNumberSet (E.164, ``+8613800138000``),
SmsSdkAppId, SignName, TemplateId (approved) and TemplateParamSet (positional strings: the content item names
its parameters ``"1"``, ``"2"`` … in template order). Tencent sends the approved template text; the rendered
body is what careloop counts and shows.

Idempotency: the key goes in ``SessionContext`` (< 512 bytes; a 32-hex digest when longer), which Tencent
returns with the send status. Tencent does not de-duplicate on it. ``ExtendCode`` is the reply-number
extension (for 回T退订 replies), not an idempotency field, so careloop leaves it alone.

Receipts: the status callback (短信下发状态通知) — a JSON array of ``{sid, report_status, errmsg,
description, user_receive_time, mobile, nationcode}``; ``sid`` is the SerialNo ``send`` returned. The mobile
number is not kept. Tencent does not sign callbacks: protect the URL (secret path, IP allow-list).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr

from careloop.channels._util import CHINA, china_time, e164, provider_ref
from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError

_FREQUENCY_CODES = frozenset(
    {
        "LimitExceeded.PhoneNumberOneHourLimit",
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.DeliveryFrequencyLimit",
        "LimitExceeded.AppDailyLimit",
        "LimitExceeded.AppGlobalDailyLimit",
        "LimitExceeded.AppMainlandChinaDailyLimit",
        "LimitExceeded.DailyLimit",
    }
)
_SHORT_WAIT = {"LimitExceeded.PhoneNumberThirtySecondLimit": 60.0}

_HINTS = {
    "FailedOperation.PhoneNumberInBlacklist": "the number is on the do-not-disturb list (the patient replied "
    "退订 or the carrier blocks it): record the opt-out and do not send SMS again",
    "FailedOperation.TemplateIncorrectOrUnapproved": "the template is not approved or does not match: check "
    "the content item's template_code in the Tencent SMS console",
    "FailedOperation.SignatureIncorrectOrUnapproved": "the signature is not approved: use an approved 签名",
    "FailedOperation.ContainSensitiveWord": "the text holds a word Tencent blocks: change the content",
    "FailedOperation.InsufficientBalanceInSmsPackage": "the SMS package is used up: buy more in the console",
    "FailedOperation.MissingSignature": "no approved signature: set sign_name",
    "FailedOperation.MissingTemplateToModify": "the template does not exist: check template_code",
    "InvalidParameterValue.IncorrectPhoneNumber": "the phone number is not valid: correct it in the record",
    "InvalidParameterValue.TemplateParameterFormatError": "a template parameter has the wrong format",
    "InvalidParameterValue.TemplateParameterLengthLimit": "a template parameter is too long: shorten it",
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": "links cannot be parameters: put the link in "
    "the approved template",
    "InvalidParameterValue.SdkAppIdNotExist": "the SmsSdkAppId does not exist: check sms_sdk_app_id",
    "InvalidParameterValue.ContentLengthLimit": "the text is too long for the template",
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": "the SmsSdkAppId is not this account's: check sms_sdk_app_id",
    "UnauthorizedOperation.RequestIpNotInWhitelist": "this server's IP is not on the SMS IP allow-list",
    "AuthFailure.SecretIdNotFound": "the SecretId is unknown: check secret_id",
    "AuthFailure.SignatureFailure": "the SecretKey is wrong: check secret_key",
    "AuthFailure.SignatureExpire": "this server's clock is off by more than five minutes: sync it (NTP)",
}


class TencentSmsConfig(ChannelConfig):
    secret_id: str = Field(description="API SecretId of a CAM user allowed sms:SendSms")
    secret_key: SecretStr = Field(description="its SecretKey")
    sms_sdk_app_id: str = Field(description="SmsSdkAppId of the SMS application (1400…)")
    sign_name: str | None = Field(None, description="approved 签名 used when a message names none")
    region: str = "ap-guangzhou"
    endpoint: str = Field("sms.tencentcloudapi.com", description="API host (host[:port])")
    protocol: Literal["https", "http"] = "https"
    timeout_seconds: int = Field(10, gt=0)
    frequency_retry_seconds: float = Field(
        3600.0, ge=0, description="wait after a per-number or daily frequency limit"
    )


class TencentSmsChannel(Channel[TencentSmsConfig]):
    """Tencent Cloud SMS (SendSms 2021-01-11, official SDK; SessionContext = idempotency key)."""

    name: ClassVar[str] = "tencent_sms"
    kind: ClassVar[str] = "sms"
    Config: ClassVar[type[ChannelConfig]] = TencentSmsConfig
    requires: ClassVar[tuple[str, ...]] = ("tencentcloud.sms", "tencentcloud.common")

    def __init__(self, config: TencentSmsConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(config, clock=clock)
        self._local = threading.local()

    def _client(self) -> Any:
        """One SDK client per thread (each holds a requests session)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from tencentcloud.common import credential
            from tencentcloud.common.profile.client_profile import ClientProfile
            from tencentcloud.common.profile.http_profile import HttpProfile
            from tencentcloud.sms.v20210111 import sms_client

            c = self.config
            http = HttpProfile(protocol=c.protocol, endpoint=c.endpoint, reqTimeout=c.timeout_seconds)
            # no region breaker: it would switch to a backup endpoint on the public internet
            profile = ClientProfile(httpProfile=http, disable_region_breaker=True)
            cred = credential.Credential(c.secret_id, c.secret_key.get_secret_value())
            client = sms_client.SmsClient(cred, c.region, profile)
            self._local.client = client
        return client

    def _send(self, message: OutboundMessage) -> SendResult:
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
        from tencentcloud.sms.v20210111 import models

        if not message.template_code:
            raise ChannelError(
                "Tencent SMS sends approved templates only: give the content item a template_code (TemplateId)",
                code="no_template",
            )
        sign_name = message.sign_name or self.config.sign_name
        if not sign_name:
            raise ChannelError("Tencent SMS needs a signature: set sign_name on the channel or the message")
        request = models.SendSmsRequest()
        request.PhoneNumberSet = [e164(message.to)]
        request.SmsSdkAppId = self.config.sms_sdk_app_id
        request.SignName = sign_name
        request.TemplateId = message.template_code
        request.TemplateParamSet = _positional(message.template_params)
        request.SessionContext = provider_ref(message.idempotency_key, 256)
        try:
            response = self._client().SendSms(request)
        except TencentCloudSDKException as e:
            code = str(e.get_code())
            if code == "ClientNetworkError":
                raise ChannelError(
                    "Tencent SMS could not be reached (network)", retryable=True, code="network"
                ) from None
            if code == "ServerNetworkError":
                raise ChannelError(
                    "Tencent SMS answered with an HTTP error", retryable=True, code=code
                ) from None
            return self._classify(code, str(e.get_message()))
        statuses = list(response.SendStatusSet or [])
        if len(statuses) != 1:
            raise ChannelError(
                f"Tencent SMS returned {len(statuses)} statuses for one number", code="protocol"
            )
        status = statuses[0]
        if str(status.Code) == "Ok":
            return SendResult.sent(status.SerialNo)
        return self._classify(str(status.Code), str(status.Message))

    def _classify(self, code: str, provider_message: str) -> SendResult:
        text = _describe(code, provider_message)
        if code in _SHORT_WAIT:
            return SendResult.retry(text, code, _SHORT_WAIT[code])
        if code in _FREQUENCY_CODES:
            return SendResult.retry(text, code, self.config.frequency_retry_seconds)
        if code == "FailedOperation.MarketingSendTimeConstraint":  # marketing SMS only 08:00–22:00 Beijing
            return SendResult.retry(text, code, _seconds_until_8am(self.clock.now()))
        if code.startswith(("InternalError", "RequestLimitExceeded")) or code in ("ResourceUnavailable",):
            return SendResult.retry(text, code, self.config.retry_after_seconds)
        return SendResult.failed(text, code)

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """The status callback: a JSON array of delivery reports."""
        try:
            data: Any = orjson.loads(payload) if isinstance(payload, bytes) else payload
        except orjson.JSONDecodeError:
            raise ChannelError("a Tencent SMS status callback is a JSON array") from None
        if isinstance(data, Mapping):
            data = [data]
        if not isinstance(data, list):
            raise ChannelError("a Tencent SMS status callback is a JSON array")
        now = self.clock.now()
        out = []
        for item in data:
            if not isinstance(item, Mapping) or not item.get("sid"):
                raise ChannelError(
                    "a Tencent SMS status item has sid, report_status, errmsg, user_receive_time"
                )
            delivered = str(item.get("report_status", "")).upper() == "SUCCESS"
            out.append(
                Receipt(
                    event="message_delivered" if delivered else "message_failed",
                    provider_message_id=str(item["sid"]),
                    at=china_time(item.get("user_receive_time"), now),
                    channel=self.name,
                    status=item.get("errmsg"),
                    error=None if delivered else f"{item.get('errmsg')}: {item.get('description')}",
                )
            )
        return out


def _positional(params: Mapping[str, str]) -> list[str]:
    """Tencent templates take parameters by position ({1}, {2} …): keys "1", "2" … give the order."""
    if not params:
        return []
    try:
        order = sorted(params, key=int)
    except ValueError:
        raise ChannelError(
            'Tencent SMS templates take positional parameters: name them "1", "2", … in the content item',
            code="bad_params",
        ) from None
    if [int(k) for k in order] != list(range(1, len(order) + 1)):
        raise ChannelError(
            "Tencent SMS template parameters must be numbered 1..n without gaps", code="bad_params"
        )
    return [str(params[k]) for k in order]


def _seconds_until_8am(now: datetime) -> float:
    local = now.astimezone(CHINA)
    target = datetime.combine(local.date(), time(8, 0), CHINA)
    if local >= target:
        target += timedelta(days=1)
    return (target - local).total_seconds()


def _describe(code: str, provider_message: str) -> str:
    hint = _HINTS.get(code)
    text = f"Tencent SMS {code}: {provider_message}"
    return f"{text} — {hint}" if hint else text
