"""Aliyun (阿里云) SMS through the official SDK (``alibabacloud_dysmsapi20170525``): ``SendSms``.

The SDK signs each call (ACS3-HMAC-SHA256 in SDK 4.x) and posts ``SendSms`` with PhoneNumbers (11 digits for
the mainland), SignName, TemplateCode (an approved ``SMS_…`` template) and TemplateParam (a JSON object of
strings). Aliyun sends the approved template text, not `OutboundMessage.body`; the body (rendered from the
same content item) is what careloop counts and shows.

Idempotency: the key goes in ``OutId`` (as is when ≤ 64 plain characters, else a 32-hex digest). Aliyun does
not de-duplicate on it; it echoes it in delivery reports (``out_id``) so receipts map back to the send.
Exactly-once is the engine's ledger's job.

Receipts: the console's "HTTP 批量推送" of SmsReport — a JSON array of ``{biz_id, out_id, success,
err_code, err_msg, report_time, phone_number, …}``; the phone number is not kept. Aliyun does not sign these
pushes: expose the receipt URL only with a secret path or an IP allow-list.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr

from careloop.channels._util import china_time, national, provider_ref
from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError

#: per-number frequency controls (分钟 / 小时 / 天级流控): trying again later works, soon does not
_FREQUENCY_CODES = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        "BUSINESS_LIMIT_CONTROL_MINUTE",
        "BUSINESS_LIMIT_CONTROL_PHONE",
        "isv.BUSINESS_LIMIT_HOUR",
        "isv.BUSINESS_LIMIT_DAY",
    }
)
#: Aliyun's side failed; the same request may succeed in a moment
_TRANSIENT_CODES = frozenset({"isp.SYSTEM_ERROR", "isp.GATEWAY_ERROR", "isp.UNKNOWN", "ServiceUnavailable"})

_HINTS = {
    "isv.MOBILE_NUMBER_ILLEGAL": "the phone number is not valid: correct it in the patient's record",
    "isv.MOBILE_COUNT_OVER_LIMIT": "one number per send: this is a careloop bug, report it",
    "isv.SMS_TEMPLATE_ILLEGAL": "the template is not approved or not this account's: check the content "
    "item's template_code in the Aliyun SMS console",
    "isv.SMS_CONTENT_CODE_ILLEGAL": "the template is not approved or blocked: check the template_code",
    "isv.SMS_SIGNATURE_ILLEGAL": "the signature is not approved: use an approved 签名 as sign_name",
    "isv.SMS_SIGN_ILLEGAL": "the signature is not approved: use an approved 签名 as sign_name",
    "isv.SMS_SIGN_NAME_ILLEGAL": "the signature is not approved: use an approved 签名 as sign_name",
    "isv.TEMPLATE_MISSING_PARAMETERS": "the template needs parameters the message did not give: check the "
    "content item's parameters against the approved template",
    "isv.CONTENT_MISSING_PARAMETERS": "a template variable is empty: give every parameter a value",
    "isv.INVALID_JSON_PARAM": "TemplateParam must be a JSON object of strings",
    "isv.INVALID_PARAMETERS": "a parameter is malformed: check sign_name, template_code and parameters",
    "isv.BLACK_KEY_CONTROL_LIMIT": "a parameter holds a blocked keyword: move fixed wording into the approved "
    "template",
    "isv.PARAM_LENGTH_LIMIT": "a template parameter is too long: shorten it",
    "isv.PARAM_NOT_SUPPORT_URL": "links cannot be parameters: put the link in the approved template",
    "isv.AMOUNT_NOT_ENOUGH": "the account balance is insufficient: top up the Aliyun account",
    "isv.OUT_OF_SERVICE": "the SMS service is suspended (balance): top up the Aliyun account",
    "isv.PRODUCT_UN_SUBSCRIPT": "SMS is not activated on this Aliyun account",
    "isv.ACCOUNT_NOT_EXISTS": "the Aliyun account does not exist: check access_key_id",
    "isv.ACCOUNT_ABNORMAL": "the Aliyun account is abnormal: contact Aliyun support",
    "isp.RAM_PERMISSION_DENY": "the RAM user may not send SMS: grant it dysms:SendSms",
    "InvalidAccessKeyId.NotFound": "the AccessKey ID is unknown: check access_key_id",
    "SignatureDoesNotMatch": "the AccessKey secret is wrong: check access_key_secret",
}


class AliyunSmsConfig(ChannelConfig):
    access_key_id: str = Field(description="AccessKey ID of a RAM user allowed dysms:SendSms")
    access_key_secret: SecretStr = Field(description="its AccessKey secret")
    sign_name: str | None = Field(None, description="approved 签名 used when a message names none")
    endpoint: str = Field("dysmsapi.aliyuncs.com", description="API host (host[:port])")
    protocol: Literal["https", "http"] = "https"
    region_id: str = "cn-hangzhou"
    connect_timeout_ms: int = Field(5000, gt=0)
    read_timeout_ms: int = Field(10000, gt=0)
    frequency_retry_seconds: float = Field(
        3600.0, ge=0, description="wait after a per-number frequency limit (isv.BUSINESS_LIMIT_CONTROL …)"
    )


class AliyunSmsChannel(Channel[AliyunSmsConfig]):
    """Aliyun SMS (SendSms, official SDK, approved templates; OutId = idempotency key)."""

    name: ClassVar[str] = "aliyun_sms"
    kind: ClassVar[str] = "sms"
    Config: ClassVar[type[ChannelConfig]] = AliyunSmsConfig
    requires: ClassVar[tuple[str, ...]] = ("alibabacloud_dysmsapi20170525", "alibabacloud_tea_openapi")

    def __init__(self, config: AliyunSmsConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(config, clock=clock)
        self._local = threading.local()

    def _client(self) -> Any:
        """One SDK client per thread (the SDK keeps per-client state)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from alibabacloud_dysmsapi20170525.client import Client
            from alibabacloud_tea_openapi import models as open_api_models

            c = self.config
            client = Client(
                open_api_models.Config(
                    access_key_id=c.access_key_id,
                    access_key_secret=c.access_key_secret.get_secret_value(),
                    endpoint=c.endpoint,
                    protocol=c.protocol,
                    region_id=c.region_id,
                    connect_timeout=c.connect_timeout_ms,
                    read_timeout=c.read_timeout_ms,
                )
            )
            self._local.client = client
        return client

    def _send(self, message: OutboundMessage) -> SendResult:
        from alibabacloud_dysmsapi20170525 import models as sms_models
        from alibabacloud_tea_openapi import exceptions as api_errors
        from darabonba.exceptions import UnretryableException
        from darabonba.runtime import RuntimeOptions

        if not message.template_code:
            raise ChannelError(
                "Aliyun SMS sends approved templates only: give the content item a template_code (SMS_…)",
                code="no_template",
            )
        sign_name = message.sign_name or self.config.sign_name
        if not sign_name:
            raise ChannelError("Aliyun SMS needs a signature: set sign_name on the channel or the message")
        request = sms_models.SendSmsRequest(
            phone_numbers=national(message.to),
            sign_name=sign_name,
            template_code=message.template_code,
            template_param=json.dumps(dict(message.template_params), ensure_ascii=False)
            if message.template_params
            else None,
            out_id=provider_ref(message.idempotency_key),
        )
        try:
            response = self._client().send_sms_with_options(request, RuntimeOptions())
        except api_errors.ThrottlingException as e:
            wait = float(e.retry_after) / 1000 if e.retry_after else None  # the SDK's unit is ms
            raise ChannelError(
                f"Aliyun SMS throttled the call ({e.code})", retryable=True, code=e.code, retry_after=wait
            ) from None
        except api_errors.ServerException as e:
            raise ChannelError(
                f"Aliyun SMS server error {e.status_code} ({e.code})", retryable=True, code=e.code
            ) from None
        except api_errors.AlibabaCloudException as e:
            code = str(e.code)
            if code.startswith("Throttling") or e.status_code == 429:
                raise ChannelError(
                    f"Aliyun SMS throttled the call ({code})", retryable=True, code=code
                ) from None
            raise ChannelError(_describe(code, e.message), code=code) from None
        except UnretryableException as e:  # the SDK's wrapper of network errors
            raise ChannelError(
                f"Aliyun SMS could not be reached: {type(e.inner_exception).__name__}",
                retryable=True,
                code="network",
            ) from None
        body = response.body
        code = str(body.code or "")
        if code == "OK":
            return SendResult.sent(body.biz_id)
        if code in _FREQUENCY_CODES:
            return SendResult.retry(
                _describe(code, body.message), code, retry_after=self.config.frequency_retry_seconds
            )
        if code in _TRANSIENT_CODES or code.startswith("Throttling"):
            return SendResult.retry(
                _describe(code, body.message), code, retry_after=self.config.retry_after_seconds
            )
        return SendResult.failed(_describe(code, body.message), code)

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """SmsReport (HTTP batch push): a JSON array of delivery reports."""
        try:
            data: Any = orjson.loads(payload) if isinstance(payload, bytes) else payload
        except orjson.JSONDecodeError:
            raise ChannelError("an Aliyun SMS report is a JSON array") from None
        if isinstance(data, Mapping):
            data = [data]
        if not isinstance(data, list):
            raise ChannelError("an Aliyun SMS report is a JSON array")
        now = self.clock.now()
        out = []
        for item in data:
            if not isinstance(item, Mapping) or not item.get("biz_id"):
                raise ChannelError("an Aliyun SMS report item has biz_id, success, err_code, report_time")
            delivered = item.get("success") in (True, "true", "True")
            out.append(
                Receipt(
                    event="message_delivered" if delivered else "message_failed",
                    provider_message_id=str(item["biz_id"]),
                    at=china_time(item.get("report_time"), now),
                    channel=self.name,
                    idempotency_key=item.get("out_id") or None,
                    status=item.get("err_code"),
                    error=None if delivered else f"{item.get('err_code')}: {item.get('err_msg')}",
                )
            )
        return out


def _describe(code: str, provider_message: str | None) -> str:
    hint = _HINTS.get(code)
    text = f"Aliyun SMS {code}: {provider_message or 'no message'}"
    return f"{text} — {hint}" if hint else text
