"""App push through a generic HTTP provider: one signed JSON POST per message.

Fits a hospital app's own push gateway or a vendor relay (JPush / Getui / Huawei / Xiaomi behind it). The
request:

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <the key>
    X-Careloop-Signature: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>
    Authorization: Bearer <token>                 (when bearer_token is set)

    {"idempotency_key", "to" (device token), "title", "body", "link", "purpose", "data" (metadata),
     "sent_at" (ISO 8601)}

The provider answers 2xx with ``{"message_id": …}`` (the field name is configurable); 429 and 5xx mean
"later" (``Retry-After`` honoured); 404 / 410 mean the device token is gone; other 4xx are failures.

Idempotency: the ``Idempotency-Key`` header — a provider that keeps keys answers a repeat with the first
result instead of pushing twice.

Receipts: the provider posts ``{"receipts": [{"message_id", "event" (delivered | failed | opened |
clicked), "at", "error", "url"}]}`` signed the same way; a missing or wrong signature is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import Field, SecretStr, field_validator

from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult, header
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError

_EVENTS = {
    "delivered": "message_delivered",
    "failed": "message_failed",
    "opened": "message_opened",
    "clicked": "message_clicked",
}


class HttpPushConfig(ChannelConfig):
    url: str = Field(description="the provider's send endpoint (https://…)")
    secret: SecretStr | None = Field(None, description="shared secret for the HMAC-SHA256 body signature")
    signature_header: str = Field("X-Careloop-Signature", description="header that carries the signature")
    bearer_token: SecretStr | None = Field(None, description="sent as Authorization: Bearer …")
    headers: dict[str, str] = Field(default_factory=dict, description="further fixed headers")
    message_id_field: str = Field("message_id", description="the response field holding the provider's id")
    timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("url starts with https:// (or http:// for a gateway on a private network)")
        return v


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class HttpPushChannel(Channel[HttpPushConfig]):
    """App push through a generic HTTP provider (signed JSON; Idempotency-Key header)."""

    name: ClassVar[str] = "http_push"
    kind: ClassVar[str] = "app_push"
    Config: ClassVar[type[ChannelConfig]] = HttpPushConfig

    def __init__(self, config: HttpPushConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(config, clock=clock)
        self._http = httpx.Client(timeout=config.timeout_seconds)

    def close(self) -> None:
        self._http.close()

    def _send(self, message: OutboundMessage) -> SendResult:
        c = self.config
        payload = {
            "idempotency_key": message.idempotency_key,
            "to": message.to,
            "title": message.subject,
            "body": message.body,
            "link": message.link,
            "purpose": message.purpose,
            "data": dict(message.metadata),
            "sent_at": self.clock.now().isoformat(),
        }
        body = orjson.dumps(payload, default=str)
        headers = {
            **c.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
        }
        if c.secret is not None:
            headers[c.signature_header] = sign(c.secret.get_secret_value(), body)
        if c.bearer_token is not None:
            headers["Authorization"] = f"Bearer {c.bearer_token.get_secret_value()}"
        try:
            response = self._http.post(c.url, content=body, headers=headers)
        except httpx.TransportError as e:
            raise ChannelError(
                f"the push provider could not be reached ({type(e).__name__})", retryable=True, code="network"
            ) from None
        status = response.status_code
        detail = _detail(response)
        if 200 <= status < 300:
            data = _json(response)
            found = data.get(c.message_id_field) if isinstance(data, dict) else None
            return SendResult.sent(str(found) if found is not None else message.idempotency_key)
        if status == 429 or status >= 500:
            return SendResult.retry(
                f"the push provider answered HTTP {status}{detail}",
                f"http_{status}",
                _retry_after(response.headers.get("Retry-After"), self.clock.now()) or c.retry_after_seconds,
            )
        if status in (404, 410):
            return SendResult.failed(
                f"the push provider answered HTTP {status}{detail}: the device token is no longer registered; "
                "drop it from the patient's app identifiers",
                "unregistered",
            )
        if status in (401, 403):
            return SendResult.failed(
                f"the push provider refused the credentials (HTTP {status}{detail}): check secret / bearer_token",
                f"http_{status}",
            )
        return SendResult.failed(
            f"the push provider refused the message (HTTP {status}{detail})", f"http_{status}"
        )

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """``{"receipts": [...]}`` signed like sends; with a secret configured, the raw body is required."""
        if self.config.secret is not None:
            if not isinstance(payload, bytes):
                raise ChannelError("push receipts are signed: pass the raw body to check the signature")
            given = header(headers, self.config.signature_header)
            if not given or not hmac.compare_digest(
                sign(self.config.secret.get_secret_value(), payload), given
            ):
                raise ChannelError(
                    f"the push receipt's {self.config.signature_header} does not match the secret"
                )
        try:
            data: Any = orjson.loads(payload) if isinstance(payload, bytes) else payload
        except orjson.JSONDecodeError:
            raise ChannelError("push receipts are JSON") from None
        items = data.get("receipts") if isinstance(data, Mapping) else data
        if not isinstance(items, list):
            raise ChannelError('push receipts are {"receipts": [{"message_id", "event", "at"}]}')
        now = self.clock.now()
        out = []
        for item in items:
            if not isinstance(item, Mapping) or not item.get("message_id"):
                raise ChannelError("a push receipt has message_id, event and at")
            event = _EVENTS.get(str(item.get("event")), str(item.get("event")))
            try:
                at = datetime.fromisoformat(str(item["at"])) if item.get("at") else now
                out.append(
                    Receipt(
                        event,
                        str(item["message_id"]),
                        at,
                        channel=self.name,
                        idempotency_key=item.get("idempotency_key"),
                        status=item.get("event"),
                        error=item.get("error"),
                        url=item.get("url"),
                    )
                )
            except ValueError as e:
                raise ChannelError(f"push receipt: {e}") from None
        return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _detail(response: httpx.Response) -> str:
    data = _json(response)
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("code", "error", "message") if data.get(k)]
        if parts:
            return ": " + " ".join(parts)[:200]
    return ""


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None
